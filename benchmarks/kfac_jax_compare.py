"""Our JAX K-FAC step against ``kfac_jax.Optimizer.step`` on the same MLP, batches and settings.

Both optimizers train their own copy of the same initial parameters on the same batches
(``digits-mlp``: 64-128-128-10 tanh, softmax cross-entropy, batch 32, float32) with matching
settings: kfac-jax's constructor defaults as our ``kfac-jax`` preset (curvature propagation
with the output-Hessian factor, normalised EMA 0.95, inverses every 5 steps, adaptive learning
rate and momentum from the exact-GGN quadratic model, LM damping every 5 steps with decay 0.9,
``initial_damping = 1``, no burn-in); ``--estimator`` and ``--inverse-period`` change both sides.
The samples differ (ours come from the batch noise, kfac-jax's from ``jax.random``); the work per
step is the same.

Protocol (as ``benchmarks/step_cost.py`` and docs/measurement.md, "Anchor step costs"): round-robin, one step
of each per round on that round's batch (the order alternates between rounds), each step
between device fences (``block_until_ready``), plus our SGD step (``optax``) as the baseline of
the ratios. The first ``warmup`` rounds cover every compiled variant (kfac-jax compiles its LM
step separately at ``t = 4``; ours compiles once) and are reported as compile time
(``sum(max(0, t - median))``) beside the first call; the figure is the median over the timed
rounds, also per phase ``t mod inverse period`` (phase 0 refreshes the inverses).

kfac-jax donates its parameter buffers, so it gets its own copy; kfac-jax 0.0.8 on jax >= 0.9.2
runs with the ``kfac-jax`` reference row's compatibility patch (loaded through
``tests/kfac_jax_compat.py``)::

    python -m benchmarks.kfac_jax_compare [--rounds 100] [--warmup 12] [--estimator curvature_prop]
                                          [--inverse-period 5]

asv: ``KFACvsKfacJax.track_*`` (our and kfac-jax's median step time and their ratio).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: Our estimator names -> kfac-jax's estimation modes.
ESTIMATION_MODES = {
    "curvature_prop": "ggn_curvature_prop",
    "fisher_gradients": "fisher_gradients",
    "fisher_exact": "fisher_exact",
}


@dataclass
class Timing:
    name: str
    times: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    phases: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def compile_s(self) -> float:
        return float(sum(max(0.0, t - self.median) for t in self.warm))

    def phase_medians(self, period: int) -> dict[int, float]:
        times, phases = np.asarray(self.times), np.asarray(self.phases)
        return {k: float(np.median(times[phases == k])) for k in range(period) if np.any(phases == k)}


def _compat_shim() -> ModuleType:
    """``tests/kfac_jax_compat.py`` by path: asv imports this file without the repository root on
    ``sys.path`` (the shim is test code, never part of the installed packages)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "kfac_jax_compat.py"
    spec = importlib.util.spec_from_file_location("ngbench_kfac_jax_compat", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kfac_jax_loss(kfac_jax: Any, problem: Any) -> Any:
    """The problem's Linear/activation MLP in kfac-jax's idiom (``x @ w + b``, ``w = W^T``)."""
    import jax
    import jax.numpy as jnp

    from backends.jax import likelihoods

    spec = problem.layout.spec
    activations = {"tanh": jnp.tanh, "relu": jax.nn.relu}

    def loss(tree: dict[str, dict[str, Any]], batch: tuple[Any, Any]) -> Any:
        x, y = batch
        h = x
        for i, layer in enumerate(spec.layers):
            if layer.kind == "linear":
                h = h @ tree[f"layer{i}"]["w"] + tree[f"layer{i}"]["b"]
            elif layer.kind == "activation":
                h = activations[layer.function](h)  # type: ignore[attr-defined]
            else:
                raise NotImplementedError(f"kfac-jax comparison model: layer kind {layer.kind!r}")
        if problem.likelihood == "softmax_ce":
            kfac_jax.register_softmax_cross_entropy_loss(h, y)
        else:
            kfac_jax.register_squared_error_loss(h, y, weight=0.5)  # ours is 0.5 ||z - y||^2
        return jnp.mean(likelihoods.per_sample_loss(problem.likelihood, h, y))

    return loss


def _tree(problem: Any, flat: Any) -> dict[str, dict[str, Any]]:
    import jax.numpy as jnp

    tree = {}
    for t in problem.layout.tapped:
        W = flat[t.weight.offset : t.weight.stop].reshape(t.weight.shape)
        tree[f"layer{t.layer_index}"] = {"w": jnp.array(W.T), "b": jnp.array(flat[t.bias.offset : t.bias.stop])}
    return tree


def measure(
    problem_name: str = "digits-mlp",
    rounds: int = 100,
    warmup: int = 12,
    estimator: str = "curvature_prop",
    inverse_period: int = 5,
) -> tuple[dict[str, Timing], dict[str, Any]]:
    import jax

    from backends import jax as jax_backend
    from backends.jax.optimizers import builtin_adapters
    from suites import get_suite

    suite = get_suite(problem_name)
    adapters = builtin_adapters()
    hparams = {**adapters["kfac"].presets["kfac-jax"], "estimator": estimator, "inverse_update_period": inverse_period}

    runners: dict[str, dict[str, Any]] = {}
    for name in ("sgd", "kfac"):
        prob = jax_backend.build_problem(suite, seed=0, dtype="float32", device="cpu")
        cls = adapters[name]
        adapter = cls()
        runners[f"ours:{name}"] = {
            "problem": prob,
            "step": prob.make_step(adapter),
            "params": prob.params0,
            "state": adapter.init(prob, cls.resolve(hparams if name == "kfac" else {})),
        }
    problem = runners["ours:kfac"]["problem"]
    batches = [problem.device_batch(i) for i in range(rounds + warmup)]
    info: dict[str, Any] = {"problem": problem_name, "batch_size": problem.batch_size, "params": problem.num_params}

    with _compat_shim().patched() as kfac_jax:
        loss = _kfac_jax_loss(kfac_jax, problem)
        # Our backend runs with jax_enable_x64: kfac-jax would turn its Python-float settings into
        # float64 arrays and mix them with the float32 factors (its lax.cond then fails).
        f32 = jax.numpy.float32
        opt = kfac_jax.Optimizer(
            value_and_grad_func=jax.value_and_grad(loss),
            l2_reg=f32(hparams["l2_reg"]),
            use_adaptive_learning_rate=True,
            use_adaptive_momentum=True,
            use_adaptive_damping=True,
            initial_damping=f32(hparams["damping"]),
            min_damping=f32(hparams["min_damping"]),
            damping_adaptation_interval=hparams["damping_adaptation_interval"],
            damping_adaptation_decay=f32(hparams["damping_adaptation_decay"]),
            include_damping_in_quad_change=hparams["include_damping_in_quad_change"],
            num_burnin_steps=0,
            estimation_mode=ESTIMATION_MODES[estimator],
            curvature_ema=f32(hparams["curvature_ema"]),
            inverse_update_period=inverse_period,
            multi_device=False,
        )
        key = jax.random.PRNGKey(0)
        theirs = _tree(problem, problem.params0)  # a copy: kfac-jax donates its buffers
        t0 = time.perf_counter()
        opt_state = opt.init(theirs, key, (batches[0].x, batches[0].y))
        # Its state keeps the damping as jnp.array(initial_damping, dtype=float): float64 under x64.
        opt_state.damping = opt_state.damping.astype(f32)
        jax.block_until_ready(opt_state)
        info["kfac_jax_init_s"] = time.perf_counter() - t0
        keys = [jax.random.fold_in(key, i) for i in range(rounds + warmup)]

        timings = {name: Timing(name) for name in (*runners, "kfac-jax")}
        first_call: dict[str, float] = {}
        order = [*runners, "kfac-jax"]
        for i in range(rounds + warmup):
            b = batches[i]
            for name in order if i % 2 == 0 else order[::-1]:
                if name == "kfac-jax":
                    jax.block_until_ready(theirs)
                    start = time.perf_counter()
                    theirs, opt_state, stats = opt.step(theirs, opt_state, keys[i], batch=(b.x, b.y), global_step_int=i)
                    jax.block_until_ready((theirs, stats))
                else:
                    r = runners[name]
                    jax.block_until_ready(r["params"])
                    start = time.perf_counter()
                    r["params"], r["state"], stats = r["step"](r["params"], r["state"], b)
                    jax.block_until_ready((r["params"], stats))
                dt = time.perf_counter() - start
                first_call.setdefault(name, dt)
                timing = timings[name]
                if i < warmup:
                    timing.warm.append(dt)
                else:
                    timing.times.append(dt)
                    timing.phases.append(i % inverse_period)
        info["first_call_s"] = first_call
        info["final_loss"] = {
            "ours:kfac": float(loss(_tree(problem, runners["ours:kfac"]["params"]), (b.x, b.y))),
            "kfac-jax": float(loss(theirs, (b.x, b.y))),
        }
    info["compile_count"] = runners["ours:kfac"]["step"].compile_count
    return timings, info


def format_report(timings: dict[str, Timing], info: dict[str, Any], inverse_period: int) -> str:
    sgd = timings["ours:sgd"].median
    lines = [
        f"problem {info['problem']} (B = {info['batch_size']}, {info['params']} params, float32); "
        f"our K-FAC step compiled {info['compile_count']}x",
        "",
        "| step | median | p10–p90 | ratio to our SGD | first call | compile (warm-up excess) | per phase t mod "
        f"{inverse_period} (ms) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("ours:sgd", "ours:kfac", "kfac-jax"):
        t = timings[name]
        times = np.asarray(t.times)
        phases = ", ".join(f"{k}: {v * 1e3:.2f}" for k, v in t.phase_medians(inverse_period).items())
        lines.append(
            f"| {name} | {t.median * 1e3:.3f} ms | {np.percentile(times, 10) * 1e3:.2f}–"
            f"{np.percentile(times, 90) * 1e3:.2f} ms | {t.median / sgd:.2f} | {info['first_call_s'][name]:.2f} s | "
            f"{t.compile_s:.2f} s | {phases} |"
        )
    ratio = timings["ours:kfac"].median / timings["kfac-jax"].median
    lines += [
        "",
        f"ours / kfac-jax (median step): {ratio:.2f}; kfac-jax init {info['kfac_jax_init_s']:.2f} s; "
        f"final batch loss ours {info['final_loss']['ours:kfac']:.4f}, kfac-jax {info['final_loss']['kfac-jax']:.4f}",
    ]
    return "\n".join(lines)


class KFACvsKfacJax:
    """asv: our JAX K-FAC step and kfac-jax's on digits-mlp (one measurement, ``setup_cache``)."""

    timeout = 900

    def setup_cache(self) -> dict[str, float]:
        try:
            import kfac_jax  # noqa: F401
        except ImportError:
            raise NotImplementedError from None  # asv records the benchmark as skipped
        timings, _ = measure(rounds=60, warmup=12)
        return {name: t.median for name, t in timings.items()}

    def track_ours_step_time(self, medians: dict[str, float]) -> float:
        return medians["ours:kfac"]

    track_ours_step_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_kfac_jax_step_time(self, medians: dict[str, float]) -> float:
        return medians["kfac-jax"]

    track_kfac_jax_step_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_ratio_ours_to_kfac_jax(self, medians: dict[str, float]) -> float:
        return medians["ours:kfac"] / medians["kfac-jax"]

    track_ratio_ours_to_kfac_jax.unit = "ratio"  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description="Our JAX K-FAC step against kfac_jax.Optimizer.step.")
    parser.add_argument("--problem", default="digits-mlp")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--estimator", choices=list(ESTIMATION_MODES), default="curvature_prop")
    parser.add_argument("--inverse-period", type=int, default=5)
    args = parser.parse_args()
    timings, info = measure(args.problem, args.rounds, args.warmup, args.estimator, args.inverse_period)
    print(format_report(timings, info, args.inverse_period))


if __name__ == "__main__":
    main()
