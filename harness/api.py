"""The public Python API of ngbench, for scripts, notebooks and tests.

>>> from harness import api
>>> api.list_suites()[:2]                                          # doctest: +SKIP
>>> r = api.run("digits-mlp", "adamw", steps=200)                  # doctest: +SKIP
>>> r.status, r.final_train_loss, r.step_time_median_s            # doctest: +SKIP
>>> d = api.direction("tiny-ce", "ief", dtype="float64")           # doctest: +SKIP

Names here are stable: later features build on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from db import store as db_store
from harness import approx, recovery, registry
from harness.devices import single_device
from harness.runner import RunResult, RunSpec, execute, prepare
from suites import get_suite
from suites import list_suites as _list_suites


def list_suites(size: str | None = None) -> list[str]:
    """Names of the registered suites (optionally one size: ``test``, ``ci``, ``gpu``, ``heldout``)."""
    return [s.name for s in _list_suites(size)]


def list_optimizers(backend: str | None = None) -> list[str]:
    """Names of the available optimizers in ``backend`` (all installed backends if ``None``)."""
    seen: dict[str, None] = {}
    for name, _ in registry.list_optimizers(backend):
        seen.setdefault(name)
    return list(seen)


def problem(suite: str, backend: str = "torch", seed: int = 0, dtype: str = "float32", device: str = "cpu") -> Any:
    """The suite built for ``backend``.

    The object has ``.model`` (an ``nn.Module`` for torch), ``.batch(step)`` -> ``(x, y,
    indices)`` numpy arrays of the training batch at ``step``, ``.loss`` (``"softmax_ce"`` or
    ``"mse"``), ``.params0`` (flat initial parameters, canonical order) and ``.oracle(...)``.
    """
    return registry.backend_module(backend).build_problem(get_suite(suite), seed=seed, dtype=dtype, device=device)


def direction(
    suite: str,
    optimizer: str,
    backend: str = "torch",
    seed: int = 0,
    step: int = 0,
    hparams: dict[str, Any] | None = None,
    dtype: str = "float32",
    *,
    preset: str | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """The method's direction on ``problem.batch(step)`` at the initial parameters.

    Fresh state, flat numpy vector in canonical order, ascent-signed like the gradient (for
    ``sgd`` it is the gradient of the mean batch loss).
    """
    spec = RunSpec(
        suite, optimizer, backend=backend, seed=seed, hparams=dict(hparams or {}), preset=preset, dtype=dtype
    )
    suite_obj, adapter_cls, hp = prepare(spec)
    prob = registry.backend_module(backend).build_problem(suite_obj, seed=seed, dtype=dtype, device=device)
    adapter = adapter_cls()
    state = adapter.init(prob, hp)
    d = prob.make_direction(adapter)(prob.params0, state, prob.device_batch(step))
    return np.asarray(prob.to_numpy(d))


def run(
    suite: str,
    optimizer: str,
    backend: str = "torch",
    seed: int = 0,
    steps: int | None = None,
    hparams: dict[str, Any] | None = None,
    device: str = "auto",
    db: str | None = None,
    tag: str | None = None,
    dtype: str = "float32",
    *,
    preset: str | None = None,
    time_budget_s: float | None = None,
    timeout_s: float | None = None,
    stop_at_target: bool = True,
    eval_every: int | None = None,
    torch_compile: bool = False,
    on_step: Any = None,
) -> RunResult:
    """Run one optimizer on one suite; store the result when ``db`` (a URL or path) is given.

    Returns a :class:`~harness.runner.RunResult` (``status``, ``initial_train_loss``,
    ``final_train_loss``, ``best_val_metric``, ``steps``, ``train_time_s``,
    ``compile_time_s``, ``step_time_median_s``, ``peak_memory_bytes``, ``passes_per_step``,
    ``metrics`` ...). ``torch_compile`` compiles the torch step (docs/measurement.md, "Compiled
    PyTorch"). Bad names or hyperparameters raise before anything runs; failures of the
    run itself are reported in ``status``/``error``, never raised.
    """
    spec = RunSpec(
        suite=suite,
        optimizer=optimizer,
        backend=backend,
        seed=seed,
        steps=steps,
        hparams=dict(hparams or {}),
        preset=preset,
        device=device,
        dtype=dtype,
        tag=tag,
        time_budget_s=time_budget_s,
        timeout_s=timeout_s,
        stop_at_target=stop_at_target,
        eval_every=eval_every,
        torch_compile=torch_compile,
    )
    prepare(spec)  # bad names, hyperparameters and values no database could store fail here
    single_device(device)  # so does a GPU this host does not have
    store = None
    if db is not None:
        store = db_store.open_store(db, writable=True)  # an unusable database fails before running
    result = execute(spec, on_step=on_step)
    if store is not None:
        recovery.store_or_keep(store, result)  # on a storage failure the result is kept in a recovery file
    return result


def approx_quality(
    suite: str,
    backend: str = "torch",
    optimizers: list[str] | None = None,
    checkpoints: int = 5,
    batches: int = 16,
    damping: list[float] | None = None,
    reference: str = "adamw",
    seed: int = 0,
    *,
    steps: int | None = None,
    state_window: int | None = None,
    hparams: dict[str, dict[str, Any]] | None = None,
    reference_hparams: dict[str, Any] | None = None,
    dtype: str = "float32",
    device: str = "auto",
    exact_limit: int | None = None,
    db: str | None = None,
    tag: str | None = None,
    on_progress: Any = None,
    own_damping: bool = False,
) -> Any:
    """Approximation quality of every method along a reference trajectory (iEF paper Sec. 6).

    Trains ``reference`` for ``steps`` (default: the suite's budget), and at ``checkpoints``
    points from 0 % to 100 % evaluates each method's direction ``d`` on ``batches`` batches:
    ``gamma = sqrt(d^T G d) / |d^T g|`` and its ratio to SGD's, the per-sample gradient-norm
    imbalance and, on small problems, the cosine and relative error to the exact damped natural
    gradient (see ``harness.approx``). ``damping`` sweeps the methods that have a ``damping``
    hyperparameter; without it every such method uses ONE shared damping
    (``harness.approx.SHARED_DAMPING``, the paper's protocol), and ``own_damping=True`` uses each
    method's own default instead. ``hparams`` maps a method to its overrides.

    Returns a pandas DataFrame with the columns ``checkpoint`` (0-based), ``step``, ``method``,
    ``damping``, ``batch``, ``gamma``, ``gamma_ratio_sgd``, ``dtg``, ``dtgd``, ``update_norm``,
    ``grad_norm_imbalance``, ``cos_ng``, ``rel_err_ng``, ``extra``; ``frame.attrs`` holds
    ``skipped`` (method -> reason), ``checkpoint_steps``, ``checkpoint_metrics``, ``exact_ng``
    and ``run_id`` (the stored reference run when ``db`` is given).
    """
    spec = approx.ApproxSpec(
        suite=suite,
        backend=backend,
        optimizers=tuple(optimizers) if optimizers is not None else None,
        reference=reference,
        reference_hparams=dict(reference_hparams or {}),
        checkpoints=checkpoints,
        batches=batches,
        damping=(
            None
            if own_damping
            else tuple(float(x) for x in damping)
            if damping is not None
            else (approx.SHARED_DAMPING,)
        ),
        seed=seed,
        steps=steps,
        state_window=state_window,
        dtype=dtype,
        device=device,
        hparams={k: dict(v) for k, v in (hparams or {}).items()},
        exact_limit=approx.EXACT_MAX_ENTRIES if exact_limit is None else exact_limit,
        tag=tag,
    )
    plan = approx.prepare(spec)
    single_device(device)
    store = None
    if db is not None:
        store = db_store.open_store(db, writable=True)  # an unusable database fails before running
    result = approx.evaluate(spec, plan=plan, on_progress=on_progress)
    if store is not None:
        approx.store_result(store, result)
    return result.frame()
