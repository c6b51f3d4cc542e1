"""Sweep files: parsing, validation messages, expansion order, expected keys (no workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.plans import expand, load
from harness.sweep import DEFAULT_TIMEOUT_S, expected_key, grid, load_config, parse_devices

MINIMAL = """
name = "nightly-cpu"
suites = ["digits-mlp"]
optimizers = ["sgd", "adamw", "ief"]
backends = ["torch"]
seeds = [0, 1]
steps = 120            # optional override of every suite's step budget
[hparams.ief]          # optional per-optimizer overrides
damping = 1e-7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_minimal_form_expands_in_stable_order(tmp_path: Path) -> None:
    plan = load(write(tmp_path, MINIMAL))
    assert plan.name == "nightly-cpu"
    got = [(s.suite, s.optimizer, s.backend, s.seed, s.steps, s.hparams) for s in plan.specs]
    assert got == [
        ("digits-mlp", "sgd", "torch", 0, 120, {}),
        ("digits-mlp", "sgd", "torch", 1, 120, {}),
        ("digits-mlp", "adamw", "torch", 0, 120, {}),
        ("digits-mlp", "adamw", "torch", 1, 120, {}),
        ("digits-mlp", "ief", "torch", 0, 120, {"damping": 1e-7}),
        ("digits-mlp", "ief", "torch", 1, 120, {"damping": 1e-7}),
    ]
    assert all(s.timeout_s == DEFAULT_TIMEOUT_S and s.dtype == "float32" and s.stop_at_target for s in plan.specs)
    assert plan.skipped == ()
    # The same file expands identically every time.
    assert load(write(tmp_path, MINIMAL)).specs == plan.specs


def test_every_option_and_grids(tmp_path: Path) -> None:
    text = """
name = "full"
suites = ["tiny-ce", "tiny-mse"]
optimizers = ["sgd"]
seeds = 2
time_budget_s = 30
timeout_s = 90
eval_every = 5
dtype = "float64"
stop_at_target = false
devices = "cpu"
workers = 2
track = "tuned"
tag = "night"
[hparams.sgd]
lr = [0.1, 0.01]
momentum = 0.0
[presets]
[budgets.tiny-mse]
steps = 7
"""
    plan = load(write(tmp_path, text))
    c = plan.config
    assert (c.devices, c.workers, c.track, c.tag, c.timeout_s) == (("cpu",), 2, "tuned", "night", 90.0)
    assert len(plan.specs) == 2 * 2 * 2  # suites x lr grid x seeds
    first = plan.specs[0]
    assert first.hparams == {"lr": 0.1, "momentum": 0.0} and first.seed == 0
    assert plan.specs[1].hparams["lr"] == 0.1 and plan.specs[1].seed == 1
    assert plan.specs[2].hparams["lr"] == 0.01
    assert {s.steps for s in plan.specs if s.suite == "tiny-mse"} == {7}
    assert {s.steps for s in plan.specs if s.suite == "tiny-ce"} == {None}
    assert all(
        s.time_budget_s == 30
        and s.eval_every == 5
        and s.dtype == "float64"
        and not s.stop_at_target
        and s.tag == "night"
        for s in plan.specs
    )
    assert plan.to_dict()["runs"] == 8
    assert grid({"a": [1, 2], "b": 3, "c": ["x", "y"]}) == [
        {"a": 1, "b": 3, "c": "x"},
        {"a": 1, "b": 3, "c": "y"},
        {"a": 2, "b": 3, "c": "x"},
        {"a": 2, "b": 3, "c": "y"},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nsuites = ["tiny-ce"\n', "malformed TOML in"),
        ('suites = ["tiny-ce"]\noptimizers = ["sgd"]', "missing required key 'name'"),
        ('name = "x"\noptimizers = ["sgd"]', "missing required key 'suites'"),
        ('name = "x"\nsuites = []\noptimizers = ["sgd"]', "suites is empty: the sweep would have no runs"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nseeds = []', "seeds is empty"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nseeds = [0, 0]', "seeds lists 0 more than once"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nseeds = ["a"]', "seeds must be a list of integers"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nsteps = 1.5', "steps must be a positive integer"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nsteps = 0', "steps must be positive"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ntimeout_s = "1h"', "timeout_s must be a positive"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nstep = 5', "unknown key 'step'; did you mean steps"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ndtype = "f16"', "dtype must be one of float32"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nbackends = ["tf"]', "unknown backend 'tf'"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ndevices = "tpu"', "invalid device 'tpu'"),
        ('name = "x"\nsuites = ["tiny-cee"]\noptimizers = ["sgd"]', "unknown suite 'tiny-cee'; did you mean tiny-ce"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgdd"]', "unknown optimizer 'sgdd'"),
        (
            'name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[hparams.sgd]\nlr = -1',
            "hparams.sgd (torch): sgd: lr",
        ),
        (
            'name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[hparams.sgd]\nlrr = 1',
            "unknown hyperparameter 'lrr'",
        ),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[hparams.sgd]\nlr = []', "empty list"),
        (
            'name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[hparams.adamw]\nlr = 1',
            "'adamw' is not in optimizers",
        ),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[presets]\nsgd = "nope"', "unknown preset 'nope'"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[budgets.tiny-mse]\nsteps = 3', "not in suites"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n[budgets.tiny-ce]\nstep = 3', "unknown key 'step'"),
        ('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ntrack = "fast"', "track must be one of untuned"),
    ],
)
def test_bad_files_get_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert message in str(info.value)
    assert "Traceback" not in str(info.value)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    text = 'name = "x"\nsuites = ["tiny-cee"]\noptimizers = ["sgd"]\nsteps = -1\nseeds = [0, 0]\nfoo = 1\n'
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    msg = str(info.value)
    assert "(4 problems)" in msg and "steps must be positive" in msg and "seeds lists 0" in msg and "'foo'" in msg
    assert "unknown suite 'tiny-cee'" in msg  # names too, in the same pass
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml")


def test_unsupported_combinations_are_skipped_with_a_note() -> None:
    config = load_config(
        {"name": "x", "suites": ["tiny-ce", "tiny-mse"], "optimizers": ["tests.faulty_adapters:Raising"]}
    )
    assert len(expand(config).specs) == 2
    # An adapter without MSE support (described in a worker, never imported here): tiny-mse is
    # skipped, not an error.
    ce_only = "tests.faulty_adapters:CrossEntropyOnly"
    plan = expand(load_config({"name": "x", "suites": ["tiny-ce", "tiny-mse"], "optimizers": [ce_only]}))
    assert [s.suite for s in plan.specs] == ["tiny-ce"]
    assert plan.skipped == (f"{ce_only} (torch) does not support mse on tiny-mse",)
    with pytest.raises(ConfigError, match="the sweep has no runs"):
        expand(load_config({"name": "x", "suites": ["tiny-mse"], "optimizers": [ce_only]}))


def test_parse_devices() -> None:
    assert parse_devices(None) is None and parse_devices("auto") is None
    assert parse_devices("cpu") == ("cpu",)
    assert parse_devices("0,2") == ("cuda:0", "cuda:2")
    assert parse_devices([1, "cuda:3"]) == ("cuda:1", "cuda:3")
    for bad in ("0,0", "gpu", [-1], [True], "cpu,0"):
        with pytest.raises(ConfigError):
            parse_devices(bad)


def test_expected_key_matches_the_key_a_run_gets() -> None:
    from harness.environment import fingerprint
    from harness.runner import RunSpec, execute

    spec = RunSpec("tiny-ce", "sgd", seed=3, steps=2, hparams={"lr": 0.05}, device="cpu")
    env = fingerprint("torch", "cpu")
    result = execute(spec)
    assert result.key == expected_key(spec, env)
    other = RunSpec("tiny-ce", "sgd", seed=3, steps=2, hparams={"lr": 0.06}, device="cpu")
    assert expected_key(other, env) != result.key


def test_cli_reports_bad_input_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import devices
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 0)  # the same answer on a GPU host
    bad = write(tmp_path, 'name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgdd"]\n')
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ngbench: error: invalid sweep file") and "unknown optimizer 'sgdd'" in err
    assert not (tmp_path / "ngbench.db").exists()  # validation happens before the database is touched
    good = write(tmp_path, 'name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nsteps = 2\n')
    assert main(["nightly", str(good), "--db", str(tmp_path / "missing" / "n.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ngbench: error: cannot open database") and "does not exist" in err
    assert main(["sweep", str(good), "--dry-run"]) == 0
    assert "x: 1 runs" in capsys.readouterr().out
    assert main(["sweep", str(good), "--executor", "slurm"]) == 2
    assert "unknown executor 'slurm'" in capsys.readouterr().err
    assert main(["sweep", str(good), "--devices", "0,1"]) == 2
    assert "GPU(s) cuda:0, cuda:1 not visible (visible: none)" in capsys.readouterr().err
    assert not (tmp_path / "ngbench.db").exists()


def test_progress_prints_plain_lines_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from harness.progress import SweepProgress
    from harness.runner import RunResult, RunSpec
    from harness.worker import Job, Outcome

    spec = RunSpec("tiny-ce", "sgd", seed=1, hparams={"lr": 0.1})
    ok = Outcome(Job(0, spec), RunResult(spec, status="done"), {"dispatched": 0.0, "received": 1.5})
    bad = Outcome(Job(1, spec), RunResult(spec, status="oom", error="Traceback\nMemoryError: 64 GiB"), {})
    progress = SweepProgress(Console(file=None), live=False)
    progress.start("s", 3, slots=2)
    progress.advance(ok)
    progress.advance(bad, stored=False)
    progress.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/3] done             tiny-ce sgd[lr=0.1] torch seed=1  1.5 s"
    assert (
        lines[1].startswith("[2/3] oom") and "not stored again" in lines[1] and lines[1].endswith("MemoryError: 64 GiB")
    )
    assert (progress.done, progress.failed, progress.remaining) == (2, 1, 1)
    assert "\x1b" not in "".join(lines)  # no control characters in logs
    live = SweepProgress(Console(record=True, force_terminal=True, width=150), live=True)
    live.start("s", 2, slots=1)
    live.advance(ok)
    live.stop()
    assert "done 1 · failed 0 · remaining 1" in live.console.export_text()
