"""The reference rows (plugins/ngbench-reference) through the submission path.

* every row passes ``check-adapter`` in every backend it has;
* each wrapper's first step equals the wrapped library called directly on the same parameters
  and gradient (no extra scaling, no lost state), in both backends;
* each row trains ``digits-mlp`` and ``diabetes-mlp`` (loss clearly below the start);
* Muon's torch and JAX adapters agree with the closed form of one Muon step on a least-squares
  problem (the Newton-Schulz polynomial applied to the gradient's singular values): JAX to
  float64 precision, torch to bfloat16's, since ``torch.optim.Muon`` iterates in bfloat16.

The distribution is used as installed when it is, else "installed" like the example plug-in
(its ``*.dist-info`` written from its ``pyproject.toml`` into a directory on ``sys.path``).
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.param_groups import param_labels
from backends.spec import ENTRY_POINT_GROUP, StateConsumedError
from harness import api, conformance, registry

ROOT = Path(__file__).resolve().parents[1] / "plugins" / "ngbench-reference"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ENTRY_POINTS: dict[str, str] = PROJECT["entry-points"][ENTRY_POINT_GROUP]
ROWS = [tuple(key.rsplit(".", 1)) for key in ENTRY_POINTS]  # (name, backend)


@pytest.fixture(scope="module", autouse=True)
def reference_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    try:
        importlib.metadata.distribution(PROJECT["name"])
        yield
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    site = tmp_path_factory.mktemp("site-packages")
    dist = site / f"{re.sub(r'[-_.]+', '_', PROJECT['name'])}-{PROJECT['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PROJECT['name']}\nVersion: {PROJECT['version']}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in ENTRY_POINTS.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    sys.path[:0] = [str(site), str(ROOT)]
    registry.refresh()
    yield
    for p in (str(site), str(ROOT)):
        sys.path.remove(p)
    registry.refresh()


def test_every_row_is_registered_for_its_backends() -> None:
    for name, backend in ROWS:
        cls = registry.get_adapter(name, backend)
        assert cls.name == name and cls.backend == backend
        assert "ngbench-reference" in registry.adapter_origin(cls)
    assert {n for n, _ in ROWS} == {"muon", "schedulefree-adamw", "soap", "shampoo", "psgd-kron", "singd", "kfac-jax"}


@pytest.mark.slow  # rescans every entry point and builds a problem: about 3.5 s
def test_without_the_plugin_the_built_ins_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main package does not depend on the distribution: with its entry points gone the
    registry lists the built-in methods only, a reference name is an unknown optimizer, and a
    built-in run works."""
    real = importlib.metadata.entry_points

    def without_reference(**kw: Any) -> Any:
        eps = real(**kw)
        return [ep for ep in eps if not (ep.dist is not None and ep.dist.name == PROJECT["name"])]

    monkeypatch.setattr(importlib.metadata, "entry_points", without_reference)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(ROOT)])
    registry.refresh()
    try:
        names = set(registry.adapters("torch"))
        assert {"sgd", "kfac"} <= names and not {n for n, _ in ROWS} & names
        with pytest.raises(registry.UnknownOptimizerError):
            registry.get_adapter("muon", "torch")
        result = api.run("tiny-ce", "sgd", "torch", steps=2, device="cpu", stop_at_target=False)
        assert result.status in ("done", "budget_exhausted"), result.error
    finally:
        monkeypatch.undo()
        registry.refresh()


# --------------------------------------------------------------------------- first step = the library


@pytest.mark.parametrize("name", ["muon", "schedulefree-adamw", "soap", "shampoo", "psgd-kron"])
def test_torch_first_steps_equal_the_library(name: str) -> None:
    """Two steps (SOAP's first only builds its preconditioner) of the wrapper equal the library's
    optimizers stepped directly on per-layer tensors with the same gradients, bit for bit: nothing
    is rescaled and no state is lost between steps."""
    import torch

    problem = api.problem("tiny-ce", "torch", dtype="float64")
    cls = registry.get_adapter(name, "torch")
    adapter, hp = cls(), cls.resolve()
    step = problem.make_step(adapter)
    params, state = problem.params0, adapter.init(problem, hp)
    blocks = problem.layout.blocks
    tensors = [problem.params0[b.offset : b.stop].clone().view(b.shape) for b in blocks]
    library = _library_optimizers(name, hp, problem, tensors)
    for t in range(2):
        batch = problem.device_batch(t)
        lib_params = torch.cat([x.reshape(-1) for x in tensors])
        np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(lib_params))
        g = problem.oracle(lib_params, batch).grad()
        for x, b in zip(tensors, blocks):
            x.grad = g[b.offset : b.stop].clone().view(b.shape)
        with torch.random.fork_rng():
            torch.manual_seed(_seed(batch, t))
            np.random.seed(_seed(batch, t) % 2**32)
            for opt in library:
                opt.step()
        params, state, stats = step(params, state, batch)
    np.testing.assert_array_equal(
        problem.to_numpy(params), problem.to_numpy(torch.cat([x.reshape(-1) for x in tensors]))
    )
    assert not np.array_equal(problem.to_numpy(params), problem.to_numpy(problem.params0))
    assert float(stats["lr"]) == hp.lr


def _seed(batch: Any, steps_taken: int) -> int:
    """The seed the wrapper's ``seeded=True`` uses (PSGD Kron's random probes)."""
    u = float(batch.noise.reshape(-1)[0])
    return int(u * 2**31) % (2**31 - 1) + steps_taken


def _library_optimizers(name: str, hp: Any, problem: Any, tensors: list[Any]) -> list[Any]:
    import pytorch_optimizer
    import schedulefree
    import torch

    labels = list(param_labels(problem.layout).values())
    if name == "muon":
        matrices = [t for t, lab in zip(tensors, labels) if lab == "matrix"]
        rest = [t for t, lab in zip(tensors, labels) if lab != "matrix"]
        return [
            torch.optim.Muon(
                matrices,
                lr=hp.lr,
                momentum=hp.momentum,
                nesterov=hp.nesterov,
                ns_steps=hp.ns_steps,
                weight_decay=hp.weight_decay,
                eps=1e-7,
            ),
            torch.optim.AdamW(rest, lr=hp.adam_lr, betas=(hp.adam_b1, hp.adam_b2), eps=hp.adam_eps, weight_decay=0.0),
        ]
    if name == "schedulefree-adamw":
        opt = schedulefree.AdamWScheduleFree(
            tensors,
            lr=hp.lr,
            betas=(hp.b1, hp.b2),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
            warmup_steps=hp.warmup_steps,
            weight_lr_power=hp.weight_lr_power,
            foreach=False,
        )
        opt.train()
        return [opt]
    if name == "soap":
        return [
            pytorch_optimizer.SOAP(
                tensors,
                lr=hp.lr,
                betas=(hp.b1, hp.b2),
                weight_decay=hp.weight_decay,
                precondition_frequency=hp.precondition_frequency,
                eps=hp.eps,
            )
        ]
    if name == "shampoo":
        return [
            pytorch_optimizer.Shampoo(
                tensors,
                lr=hp.lr,
                momentum=hp.momentum,
                weight_decay=hp.weight_decay,
                preconditioning_compute_steps=hp.preconditioning_compute_steps,
                matrix_eps=hp.matrix_eps,
            )
        ]
    if name == "psgd-kron":
        return [
            pytorch_optimizer.Kron(
                tensors, lr=hp.lr, momentum=hp.b1, weight_decay=hp.weight_decay, precondition_dtype=problem.dtype
            )
        ]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    ["muon", "schedulefree-adamw", pytest.param("psgd-kron", marks=pytest.mark.slow)],  # 4 s to compile
)
def test_jax_first_steps_equal_optax(name: str) -> None:
    """Two jitted steps of the wrapper equal the optax transformation applied directly to the
    per-layer dict with the same gradients (float64)."""
    import jax.numpy as jnp

    problem = api.problem("tiny-ce", "jax", dtype="float64")
    cls = registry.get_adapter(name, "jax")
    adapter, hp = cls(), cls.resolve()
    step = problem.make_step(adapter)
    params, state = problem.params0, adapter.init(problem, hp)
    tx = cls.tx_factory(hp, param_labels(problem.layout))
    tree = adapter.split(problem, problem.params0)
    opt_state = tx.init(tree)
    for t in range(2):
        batch = problem.device_batch(t)
        g = adapter.split(problem, problem.oracle(adapter.join(problem, tree), batch).grad())
        updates, opt_state = tx.update(g, opt_state, tree)
        tree = {k: tree[k] + updates[k] for k in tree}
        params, state, stats = step(params, state, batch)
    expected = np.asarray(jnp.concatenate([tree[b.name].reshape(-1) for b in problem.layout.blocks]))
    np.testing.assert_allclose(np.asarray(params), expected, rtol=1e-12, atol=1e-14)
    assert float(stats["lr"]) == hp.lr


def test_a_consumed_torch_state_is_refused_and_a_copy_is_independent() -> None:
    problem = api.problem("tiny-ce", "torch", dtype="float64")
    cls = registry.get_adapter("soap", "torch")
    adapter = cls()
    assert cls.capabilities.consumes_state
    step = problem.make_step(adapter)
    state0 = adapter.init(problem, cls.resolve())
    params1, state1, _ = step(problem.params0, state0, problem.device_batch(0))
    kept = copy.deepcopy(state1)
    params2, _, _ = step(params1, state1, problem.device_batch(1))
    with pytest.raises(StateConsumedError, match="already handed to a step"):
        step(params1, state1, problem.device_batch(1))
    again, _, _ = step(params1, kept, problem.device_batch(1))  # the copy continues exactly
    np.testing.assert_array_equal(problem.to_numpy(again), problem.to_numpy(params2))


def test_schedule_free_evaluates_at_the_average_in_both_backends() -> None:
    """``eval_params`` returns what the library's own evaluation mode gives (torch: ``eval()``; JAX:
    ``schedule_free_eval_params``), differs from the training iterate, and changes nothing."""
    import optax
    import torch

    for backend in ("torch", "jax"):
        problem = api.problem("tiny-ce", backend, dtype="float64")
        cls = registry.get_adapter("schedulefree-adamw", backend)
        adapter, hp = cls(), cls.resolve()
        step = problem.make_step(adapter)
        params, state = problem.params0, adapter.init(problem, hp)
        for t in range(3):
            params, state, _ = step(params, state, problem.device_batch(t))
        x = problem.to_numpy(adapter.eval_params(problem, params, state))
        assert np.max(np.abs(x - problem.to_numpy(params))) > 1e-6
        np.testing.assert_array_equal(problem.to_numpy(adapter.eval_params(problem, params, state)), x)
        if backend == "jax":
            tree = optax.contrib.schedule_free_eval_params(state.opt_state, adapter.split(problem, params))
            np.testing.assert_allclose(np.asarray(adapter.join(problem, tree)), x, rtol=1e-12)
        else:
            blocks = problem.layout.blocks
            tensors = [problem.params0[b.offset : b.stop].clone().view(b.shape) for b in blocks]
            (opt,) = _library_optimizers("schedulefree-adamw", hp, problem, tensors)
            for t in range(3):
                g = problem.oracle(torch.cat([v.reshape(-1) for v in tensors]), problem.device_batch(t)).grad()
                for v, b in zip(tensors, blocks):
                    v.grad = g[b.offset : b.stop].clone().view(b.shape)
                opt.step()
            opt.eval()
            np.testing.assert_array_equal(problem.to_numpy(torch.cat([v.reshape(-1) for v in tensors])), x)


# --------------------------------------------------------------------------- Muon's closed form


NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def _muon_closed_form(grad: np.ndarray, lr: float, ns_steps: int) -> np.ndarray:
    """The first Muon update of a ``d_out x d_in`` matrix from a zero momentum buffer: the
    Newton-Schulz polynomial ``p(s) = a s + b s^3 + c s^5`` applied ``ns_steps`` times to each
    singular value of ``G / ||G||_F`` (the iteration keeps the singular vectors), times
    ``-lr sqrt(max(1, d_out / d_in))`` (Nesterov or not, the buffer is a multiple of ``G``)."""
    u, s, vt = np.linalg.svd(grad / np.linalg.norm(grad), full_matrices=False)
    a, b, c = NS_COEFFICIENTS
    for _ in range(ns_steps):
        s = a * s + b * s**3 + c * s**5
    d_out, d_in = grad.shape
    return -lr * np.sqrt(max(1.0, d_out / d_in)) * (u * s) @ vt


@pytest.mark.parametrize(("backend", "rtol"), [("jax", 1e-6), ("torch", 5e-2)])
def test_muon_matches_the_closed_form_on_least_squares(backend: str, rtol: float) -> None:
    """Least squares (one Linear layer, convex): the weight's first update is the closed form,
    in JAX to 1e-6 (the eps added to the norm in the normalisation; float64 otherwise), in PyTorch
    to bfloat16's (``torch.optim.Muon`` iterates in bfloat16 whatever the working dtype): the two
    backends agree to that precision."""
    suite = conformance.convex_suite("mse")
    module = registry.backend_module(backend)
    problem = module.build_problem(suite, seed=0, dtype="float64", device="cpu")
    cls = registry.get_adapter("muon", backend)
    hp = cls.resolve({"head_optimizer": "muon"})  # the only weight is the head: put it on Muon
    adapter = cls()
    params0, batch = problem.params0, problem.device_batch(0)
    grad = problem.to_numpy(problem.oracle(params0, batch).grad())
    new, _, _ = problem.make_step(adapter)(params0, adapter.init(problem, hp), batch)
    weight = problem.layout.blocks[0]
    assert len(weight.shape) == 2
    update = (problem.to_numpy(new) - problem.to_numpy(params0))[weight.offset : weight.stop].reshape(weight.shape)
    expected = _muon_closed_form(grad[weight.offset : weight.stop].reshape(weight.shape), hp.lr, hp.ns_steps)
    assert np.max(np.abs(update - expected)) <= rtol * np.max(np.abs(expected))


# --------------------------------------------------------------------------- the battery and training


# Every row's battery runs in CI (kfac-jax's compiles its step per problem: about 30 s on one core).
BATTERY_ROWS = [pytest.param(n, b, id=f"{n}-{b}") for n, b in ROWS]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), BATTERY_ROWS)
def test_check_adapter_passes(name: str, backend: str) -> None:
    report = conformance.assert_conforms(name, backend)
    assert report["step_outputs"].passed and report["lowers_loss"].passed
    assert report["state_handoff"].status == ("pass" if backend == "torch" else "skip")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), ROWS, ids=[f"{n}-{b}" for n, b in ROWS])
@pytest.mark.parametrize("suite", ["digits-mlp", "diabetes-mlp"])
def test_row_trains_the_small_suites(name: str, backend: str, suite: str) -> None:
    # Shampoo's library default step (1e-3) barely moves these suites in 150 steps (2.316 -> 2.292 on
    # digits-mlp): its update has unit Frobenius norm per matrix. 0.1 is inside its search space.
    # SINGD's library default (lr 1e-3 with momentum 0.9) likewise: 2.316 -> 2.132 on digits-mlp in 150
    # steps; 3e-2 (0.121) is inside its search space too.
    hparams = {"lr": 0.1} if name == "shampoo" else {"lr": 3e-2} if name == "singd" else None
    result = api.run(suite, name, backend, steps=150, device="cpu", stop_at_target=False, hparams=hparams)
    assert result.status in ("done", "budget_exhausted", "target_reached"), result.error
    assert result.final_train_loss < 0.8 * result.initial_train_loss, (
        result.initial_train_loss,
        result.final_train_loss,
    )


def test_quickstart_runs_the_reference_rows_on_the_cheap_suites_only() -> None:
    from harness.commands.quickstart import PLUGIN_SUITES, quickstart_config

    builtin = quickstart_config(["digits-mlp", "diabetes-mlp"], ["torch"], [0], plugins=False)["optimizers"]
    plugin = quickstart_config(list(PLUGIN_SUITES), ["torch"], [0], plugins=True)["optimizers"]
    assert "sgd" in builtin and not {"muon", "soap"} & set(builtin)
    assert set(plugin) == {"muon", "schedulefree-adamw", "soap", "shampoo", "psgd-kron", "singd"}
    assert set(quickstart_config(["digits-mlp"], ["torch"], [0])["optimizers"]) == set(builtin) | set(plugin)


# --------------------------------------------------------------------------- the model hook and kfac-jax


def test_the_jax_model_hook_sees_every_tapped_layer_in_order() -> None:
    """``problem.apply(params, x, at_tap=...)``: the plain call is the oracle's forward; the hook is
    called once per tapped layer in ``layout.tapped`` order with the layer's input (the oracle's
    tap input) and pre-activation, and what it returns flows on (shifting the output layer's
    pre-activation by 1 shifts the logits by 1)."""
    import jax.numpy as jnp

    problem = api.problem("tiny-ce", "jax", dtype="float64")
    params, batch = problem.params0, problem.device_batch(0)
    oracle = problem.oracle(params, batch, taps=True)
    np.testing.assert_array_equal(np.asarray(problem.apply(params, batch.x)), np.asarray(oracle.logits))
    seen: list[tuple[int, Any, Any]] = []

    def record(k: int, s: Any, a: Any) -> Any:
        seen.append((k, s, a))
        return s

    np.testing.assert_array_equal(np.asarray(problem.apply(params, batch.x, at_tap=record)), np.asarray(oracle.logits))
    assert [k for k, _, _ in seen] == [t.tap_index for t in problem.layout.tapped] == list(range(len(seen)))
    for (_, _s, a), expected in zip(seen, oracle.tap_inputs()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(expected))
    last = len(seen) - 1
    shifted = problem.apply(params, batch.x, at_tap=lambda k, s, a: s + 1.0 if k == last else s)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(oracle.logits) + 1.0, rtol=1e-12)
    assert jnp.asarray(shifted).dtype == jnp.float64


def test_the_torch_model_hook_is_the_module() -> None:
    """Torch: ``problem.apply`` is the oracle's forward, ``module_from_flat`` the same model as an
    ``nn.Module`` (SINGD-style libraries hook it); ``at_tap`` is JAX's and refused here."""
    import torch

    problem = api.problem("tiny-ce", "torch", dtype="float64")
    params, batch = problem.params0 + 0.01, problem.device_batch(0)
    logits = problem.oracle(params, batch).logits
    torch.testing.assert_close(problem.apply(params, batch.x), logits, rtol=0, atol=0)
    torch.testing.assert_close(problem.module_from_flat(params)(batch.x), logits, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotImplementedError, match="JAX-only"):
        problem.apply(params, batch.x, at_tap=lambda k, s, a: s)


def test_kfac_jax_tree_views_dense_weights_as_kfac_jax_does() -> None:
    """The row's parameter tree has one leaf per layout block, Linear weights transposed to
    kfac-jax's ``(d_in, d_out)``, and maps back to the flat vector exactly."""
    pytest.importorskip("kfac_jax")
    from ngbench_reference.kfac_deepmind import jax_adapter

    problem = api.problem("tiny-ce", "jax", dtype="float64")
    tree = jax_adapter.to_tree(problem.layout, problem.params0)
    assert set(tree) == {b.name for b in problem.layout.blocks}
    for t in problem.layout.tapped:
        assert tree[t.weight.name].shape == tuple(reversed(t.weight.shape))
    np.testing.assert_array_equal(np.asarray(jax_adapter.to_flat(problem.layout, tree)), np.asarray(problem.params0))


@pytest.mark.slow  # a fresh interpreter importing kfac-jax: about 5 s
def test_the_kfac_jax_patch_is_the_rows_own_and_only_installed_with_it() -> None:
    """One copy of the jax >= 0.9.2 patch: the tests' handle loads the row's module; using the
    kfac-jax row installs it; a fresh process that imports (registers) the row but never uses it
    imports no kfac-jax, and kfac-jax imported there keeps its own function."""
    pytest.importorskip("kfac_jax")
    import os
    import subprocess

    from kfac_jax._src import tag_graph_matcher
    from ngbench_reference.kfac_deepmind import compat, jax_adapter

    from tests import kfac_jax_compat

    assert compat.needs_patch()  # the pinned jax returns only the params from get_bind_params
    assert kfac_jax_compat.PATH.samefile(compat.__file__)
    jax_adapter.kfac()
    assert tag_graph_matcher.eval_jaxpr_eqn is compat.eval_jaxpr_eqn
    code = (
        "import sys; import ngbench_reference.kfac_deepmind.jax_adapter; print('kfac_jax' in sys.modules); "
        "from kfac_jax._src import tag_graph_matcher as t; print(t.eval_jaxpr_eqn.__module__)"
    )
    path = os.pathsep.join([str(ROOT), str(ROOT.parents[1]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "kfac_jax._src.tag_graph_matcher"]


@pytest.mark.slow
@pytest.mark.kfac_jax
@pytest.mark.parametrize("suite", ["tiny-ce", "tiny-mse"])
def test_kfac_jax_steps_equal_the_library_on_its_own_model(suite: str) -> None:
    """Five jitted steps of the row (through the LM damping update at step 5) equal
    ``kfac_jax.Optimizer`` stepped directly, with the same settings and keys, on the same network
    written in kfac-jax's idiom with its automatic layer registration (float64): the model hook and
    the manual ``register_dense`` give kfac-jax the same problem, and nothing is rescaled or lost."""
    import jax
    import jax.numpy as jnp
    from ngbench_reference.kfac_deepmind import compat, jax_adapter

    from tests.test_kfac_jax_reference import KfacJaxModel

    problem = api.problem(suite, "jax", dtype="float64")
    cls = registry.get_adapter("kfac-jax", "jax")
    adapter, hp = cls(), cls.resolve()
    step = problem.make_step(adapter)
    params, state = problem.params0, adapter.init(problem, hp)
    with compat.patched() as kfac_jax, jax.enable_x64(True):
        model = KfacJaxModel(problem)
        opt = kfac_jax.Optimizer(
            value_and_grad_func=jax.value_and_grad(model.loss(kfac_jax)),
            l2_reg=0.0,
            use_adaptive_learning_rate=True,
            use_adaptive_momentum=True,
            use_adaptive_damping=True,
            initial_damping=1.0,
            num_burnin_steps=0,
            multi_device=False,
        )
        b0 = problem.device_batch(0)
        tree = model.to_tree(problem.params0)
        lib_state = opt.init(tree, jax.random.PRNGKey(0), (b0.x, b0.y))
        for t in range(5):
            batch = problem.device_batch(t)
            step_key = jax_adapter.noise_key(batch)  # the row's documented key: from the batch noise
            tree, lib_state, lib_stats = opt.step(
                tree, lib_state, step_key, batch=(batch.x, batch.y), global_step_int=t
            )
            params, state, stats = step(params, state, batch)
            np.testing.assert_allclose(np.asarray(params), np.asarray(model.to_flat(tree)), rtol=1e-9, atol=1e-12)
    assert float(stats["damping"]) == pytest.approx(float(lib_stats["damping"]), rel=1e-12)
    assert float(state.damping) == pytest.approx(float(lib_state.damping), rel=1e-12)
    assert float(state.damping) != hp.damping  # the LM rule ran at step 5
    assert not np.allclose(np.asarray(params), np.asarray(problem.params0))
    assert jnp.asarray(params).dtype == jnp.float64


# --------------------------------------------------------------------------- SINGD


def test_singd_first_steps_equal_the_library_on_the_module() -> None:
    """Three steps of the row equal ``singd``'s ``SINGD`` driven as its documentation shows (forward,
    ``backward``, ``step``) on the problem's ``nn.Module``, bit for bit (float64): the flat vector
    round trip through the module loses nothing and SINGD's state carries over between steps."""
    import torch
    from singd.optim.optimizer import SINGD

    problem = api.problem("tiny-ce", "torch", dtype="float64")
    cls = registry.get_adapter("singd", "torch")
    adapter, hp = cls(), cls.resolve({"T": 2})  # factors updated at steps 0 and 2 of the three
    step = problem.make_step(adapter)
    params, state = problem.params0, adapter.init(problem, hp)
    module = problem.module_from_flat(problem.params0)
    assert all(isinstance(m, (torch.nn.Linear, torch.nn.Sequential, torch.nn.Tanh)) for m in module.modules())
    opt = SINGD(module, lr=hp.lr, momentum=hp.momentum, damping=hp.damping, alpha1=hp.alpha1, T=hp.T, lr_cov=hp.lr_cov)
    for t in range(3):
        batch = problem.device_batch(t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(batch.x), batch.y).backward()
        opt.step()
        params, state, stats = step(params, state, batch)
    expected = torch.nn.utils.parameters_to_vector(module.parameters())
    torch.testing.assert_close(params, expected, rtol=0, atol=0)
    assert not torch.equal(params, problem.params0)
    assert float(stats["lr"]) == hp.lr
    assert problem.counters.snapshot()["forward"] >= 3  # the module's passes are booked
