"""``ngbench tune SUITE OPTIMIZER``: one tuning study of the tuned track.

The same as a sweep file with ``suites = [SUITE]``, ``optimizers = [OPTIMIZER]`` and ``trials``
(``harness.sweep``, ``harness.tuning``): every option is validated the same way, the study runs
through the same orchestrator (fresh workers, exactly-once storage), and running the same
command again, or with ``--resume``, completes only the trials and re-runs that are missing and
selects the same configuration from the stored trials.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from harness.commands.runs import DbOption
from harness.commands.sweep import (
    DevicesOption,
    DryRunOption,
    ExecutorOption,
    IsolationOption,
    RayAddressOption,
    ResumeOption,
    TagOption,
    WorkersOption,
    _print_plan,
    raise_if_kept,
    run_plan,
    summary_json,
)
from harness.errors import ConfigError
from harness.plans import expand
from harness.sweep import load_config, parse_devices


def tune_config(
    suite: str,
    optimizer: str,
    *,
    trials: int,
    seeds: int | None = None,
    rerun_seeds: list[int] | None = None,
    trial_seed: int | None = None,
    sampler: str | None = None,
    study_seed: int | None = None,
    backend: str = "torch",
    overrides: list[str] | None = None,
    preset: str | None = None,
    dtype: str | None = None,
    timeout_s: float | None = None,
    tag: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The sweep mapping of one study (validated by ``harness.sweep.load_config``)."""
    raw: dict[str, Any] = {
        "name": name or f"tune-{suite}-{optimizer}-{backend}",
        "suites": [suite],
        "optimizers": [optimizer],
        "backends": [backend],
        "track": "tuned",
        "trials": trials,
    }
    if rerun_seeds:
        raw["rerun_seeds"] = list(rerun_seeds)
    elif seeds is not None:
        raw["rerun_seeds"] = seeds
    for key, value in (
        ("trial_seed", trial_seed),
        ("sampler", sampler),
        ("study_seed", study_seed),
        ("dtype", dtype),
        ("timeout_s", timeout_s),
        ("tag", tag),
    ):
        if value is not None:
            raw[key] = value
    fixed: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects name=value, got {item!r}")
        fixed[key.strip()] = value.strip()
    if fixed:
        raw["hparams"] = {optimizer: fixed}
    if preset is not None:
        raw["presets"] = {optimizer: preset}
    return raw


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune(
        suite: Annotated[str, typer.Argument(help="Suite to tune on.")],
        optimizer: Annotated[str, typer.Argument(help="Optimizer (built-in, entry point or module:Class).")],
        trials: Annotated[int, typer.Option("--trials", min=1, help="Quasi-random trials per study.")] = 8,
        seeds: Annotated[
            int | None, typer.Option("--seeds", min=1, help="Re-run the chosen configuration on seeds 0..K-1 [3].")
        ] = None,
        rerun_seed: Annotated[
            list[int] | None, typer.Option("--rerun-seed", help="Re-run seed (repeatable; overrides --seeds).")
        ] = None,
        trial_seed: Annotated[
            int | None, typer.Option("--trial-seed", min=0, help="Seed every trial runs on [1000].")
        ] = None,
        sampler: Annotated[str | None, typer.Option("--sampler", help="halton or sobol [halton].")] = None,
        study_seed: Annotated[
            int | None, typer.Option("--study-seed", min=0, help="Scrambling seed of the sampler [0].")
        ] = None,
        backend: Annotated[str, typer.Option("--backend", help="torch or jax.")] = "torch",
        overrides: Annotated[
            list[str] | None,
            typer.Option("--set", help="Fix a hyperparameter (name=value; it leaves the search). Repeatable."),
        ] = None,
        preset: Annotated[str | None, typer.Option("--preset", help="Adapter preset the trials start from.")] = None,
        dtype: Annotated[str | None, typer.Option("--dtype", help="float32 or float64.")] = None,
        timeout_s: Annotated[
            float | None, typer.Option("--timeout", min=0.0, help="Wall-clock limit per run, seconds.")
        ] = None,
        name: Annotated[str | None, typer.Option("--name", help="Sweep name [tune-SUITE-OPTIMIZER-BACKEND].")] = None,
        executor: ExecutorOption = "local",
        workers: WorkersOption = None,
        devices: DevicesOption = None,
        resume: ResumeOption = False,
        db: DbOption = None,
        tag: TagOption = None,
        ray_address: RayAddressOption = None,
        isolation: IsolationOption = "fork",
        dry_run: DryRunOption = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON at the end.")] = False,
    ) -> None:
        """Tune OPTIMIZER on SUITE (tuned track): --trials quasi-random configurations from its search
        space, then the best one re-run on --seeds seeds; the trials and re-runs are stored and
        ranked on the tuned board."""
        raw = tune_config(
            suite,
            optimizer,
            trials=trials,
            seeds=seeds,
            rerun_seeds=rerun_seed,
            trial_seed=trial_seed,
            sampler=sampler,
            study_seed=study_seed,
            backend=backend,
            overrides=overrides,
            preset=preset,
            dtype=dtype,
            timeout_s=timeout_s,
            tag=tag,
            name=name,
        )
        where = f"ngbench tune {suite} {optimizer}"
        plan = expand(load_config(raw, where=where), where=where)
        if dry_run:
            _print_plan(plan)
            return
        devs = parse_devices(devices) if devices is not None else None
        summary, _ = run_plan("tune", plan, executor, devs, workers, resume, db, ray_address, isolation)
        if json_out:
            print(json.dumps(summary_json(summary), default=str))
        raise_if_kept(summary)
        if summary.interrupted:
            raise typer.Exit(130)
