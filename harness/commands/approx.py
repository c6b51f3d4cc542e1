"""``ngbench approx``: approximation quality along a reference trajectory (``harness.approx``)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from db.store import open_store
from harness.approx import (
    EXACT_MAX_ENTRIES,
    SHARED_DAMPING,
    ApproxSpec,
    evaluate,
    evaluate_isolated,
    non_descent_counts,
    prepare,
    store_result,
    summary,
)
from harness.approx.planning import check_limits
from harness.commands.runs import DbOption, fmt_float, make_console, parse_assignments
from harness.devices import single_device
from harness.errors import ConfigError


def split_list(items: list[str] | None) -> list[str]:
    """Repeatable, comma-separated option values: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    return [part.strip() for item in items or [] for part in item.split(",") if part.strip()]


def approx_dampings(given: tuple[float, ...] | None, own_damping: bool) -> tuple[float, ...] | None:
    """The dampings to evaluate: ``--damping`` values, else each method's own with
    ``--own-damping``, else the shared default (the iEF paper's protocol)."""
    if given is not None and own_damping:
        raise ConfigError("--damping and --own-damping exclude each other")
    if own_damping:
        return None
    return given if given is not None else (SHARED_DAMPING,)


def parse_dampings(items: list[str] | None) -> tuple[float, ...] | None:
    values = split_list(items)
    if not values:
        return None
    out = []
    for text in values:
        try:
            lam = float(text)
        except ValueError:
            raise ConfigError(f"--damping expects numbers, got {text!r}") from None
        if not math.isfinite(lam) or lam < 0:
            raise ConfigError(f"--damping values must be finite and >= 0, got {text!r}")
        out.append(lam)
    return tuple(out)


def parse_method_assignments(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["ief.damping=0", "kfac.estimator=fisher_exact"]`` -> ``{"ief": {"damping": "0"}, ...}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().rpartition(".")
        if not sep or not dot or not method or not name:
            raise ConfigError(f"--set expects method.key=value, got {item!r}")
        out.setdefault(method, {})[name] = value.strip()
    return out


def _stage_header(step: int, total: int) -> str:
    pct = 100.0 * step / total if total else 0.0
    return f"{pct:.0f}% (step {step})"


def comparability_notes(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Per method, why its cosine to the exact NG is not comparable, or the objective it was
    scored on (harness/approx/comparability.py)."""
    notes: dict[str, str] = {}
    for r in rows:
        extra = r.get("extra") or {}
        if extra.get("ng_not_comparable"):
            notes.setdefault(r["method"], f"cosine to the exact NG not comparable: {extra['ng_not_comparable']}")
        elif extra.get("objective"):
            notes.setdefault(
                r["method"], f"scored on {extra['objective']} (l2_reg = {extra.get('l2_reg')}), what it preconditions"
            )
    return notes


def render_summary(frame: Any, result: Any, value: str = "gamma_ratio_sgd", title: str = "") -> Table:
    """Median ``value`` per method (and damping) x checkpoint, as a rich table (all text escaped)."""
    table = summary(frame, value)
    steps = result.checkpoint_steps
    total = result.reference.spec.steps or 0
    out = Table(title=title or None, title_justify="left")
    out.add_column("method")
    out.add_column("damping", justify="right")
    for k in table.columns:
        out.add_column(_stage_header(steps[int(k)], total), justify="right")
    flagged = non_descent_counts(frame) if value == "gamma_ratio_sgd" else {}
    if flagged:
        out.add_column("non-descent", justify="right")
    for (method, damping), row in table.iterrows():
        lam = None if damping is None or (isinstance(damping, float) and math.isnan(damping)) else float(damping)
        cells = [Text(str(method)), Text("-" if lam is None else f"{lam:g}")]
        cells += [Text(fmt_float(v, 3)) for v in row.tolist()]
        if flagged:
            cells.append(Text(str(flagged.get((method, lam), 0))))
        out.add_row(*cells)
    return out


def render_stages(frame: Any, result: Any) -> Table:
    """Per checkpoint: the reference's metrics and the batches' median gradient-norm imbalance."""
    total = result.reference.spec.steps or 0
    metric_names = [
        n for n in ("train_loss", result.reference.val_metric) if n and any(n in m for m in result.checkpoint_metrics)
    ]
    out = Table(title="reference trajectory", title_justify="left")
    out.add_column("checkpoint")
    for name in metric_names:
        out.add_column(name, justify="right")
    out.add_column("grad-norm imbalance (median)", justify="right")
    imb = frame.groupby("checkpoint")["grad_norm_imbalance"].median() if len(frame) else {}
    for m in result.checkpoint_metrics:
        k = m["checkpoint"]
        cells = [Text(_stage_header(m["step"], total))]
        cells += [Text(fmt_float(m.get(name), 4)) for name in metric_names]
        cells.append(Text(fmt_float(float(imb[k]) if k in imb else None, 4)))
        out.add_row(*cells)
    return out


def register(app: typer.Typer) -> None:
    @app.command("approx")
    def approx(
        suite: Annotated[str, typer.Argument(help="Suite name (ngbench list suites).")],
        backend: Annotated[str, typer.Option(help="torch or jax.")] = "torch",
        optimizers: Annotated[
            list[str] | None,
            typer.Option(
                "--optimizers", "-o", help="Methods to evaluate (repeatable or comma-separated; default: all)."
            ),
        ] = None,
        reference: Annotated[str, typer.Option(help="Optimizer of the reference trajectory.")] = "adamw",
        checkpoints: Annotated[int, typer.Option(min=1, help="Checkpoints evenly from 0% to 100% of the run.")] = 5,
        batches: Annotated[int, typer.Option(min=1, help="Batches per checkpoint.")] = 16,
        damping: Annotated[
            list[str] | None,
            typer.Option(help="Damping sweep (mean-loss convention; repeatable or comma-separated)."),
        ] = None,
        steps: Annotated[
            int | None, typer.Option(min=0, help="Reference trajectory length (default: the suite's).")
        ] = None,
        seed: Annotated[int, typer.Option(help="Master seed.")] = 0,
        state_window: Annotated[
            int | None,
            typer.Option(min=1, help="Feed stateful methods only the last W steps before each checkpoint."),
        ] = None,
        exact_limit: Annotated[
            int | None, typer.Option(min=0, help="Largest B*C*P for the exact natural gradient (0: off).")
        ] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="Method hyperparameter method.key=value (repeatable).")
        ] = None,
        reference_set: Annotated[
            list[str] | None, typer.Option("--reference-set", help="Reference hyperparameter key=value (repeatable).")
        ] = None,
        device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda ...")] = "auto",
        dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
        db: DbOption = None,
        tag: Annotated[str | None, typer.Option(help="Free-text tag stored with the reference run.")] = None,
        no_store: Annotated[bool, typer.Option("--no-store", help="Do not write to the database.")] = False,
        own_damping: Annotated[
            bool,
            typer.Option(
                "--own-damping",
                help="Evaluate every method at its own default damping instead of the shared one "
                f"(default: one shared damping {SHARED_DAMPING:g} for every method that has one, the paper's E1).",
            ),
        ] = False,
    ) -> None:
        """Approximation quality (iEF paper Sec. 6): gamma/gamma_SGD of every method along a reference run."""
        single_device(device)  # a GPU that is not there fails here, before anything runs
        spec = ApproxSpec(
            suite=suite,
            backend=backend,
            optimizers=tuple(split_list(optimizers)) or None,
            reference=reference,
            reference_hparams=parse_assignments(reference_set),
            checkpoints=checkpoints,
            batches=batches,
            damping=approx_dampings(parse_dampings(damping), own_damping),
            seed=seed,
            steps=steps,
            state_window=state_window,
            dtype=dtype,
            device=device,
            hparams=parse_method_assignments(set_),
            exact_limit=EXACT_MAX_ENTRIES if exact_limit is None else exact_limit,
            tag=tag,
        )
        isolated = spec.involves_third_party
        # Bad names and hyperparameters fail here, before anything runs (in the worker for
        # third-party adapters, which never run in this process: it may hold the database URL).
        check_limits(spec)
        plan = None if isolated else prepare(spec)
        local = spec.local_part() if isolated else None
        if local is not None:
            prepare(local)  # the built-in part fails here, before the worker and the database
        store = None
        if not no_store:
            store = open_store(db, writable=True)  # an unusable database fails before the evaluation
        err = make_console(stderr=True)
        if isolated:
            if err.is_terminal:
                err.print(Text("third-party adapters: evaluating in an isolated worker process"))
            result = evaluate_isolated(spec)
        else:
            result = evaluate(
                spec, plan=plan, on_progress=lambda msg: err.print(Text(msg)) if err.is_terminal else None
            )
        frame = result.frame()
        console = make_console()
        console.print(render_stages(frame, result))
        console.print(render_summary(frame, result, title="median gamma / gamma_SGD (below 1: closer to NG than SGD)"))
        if result.exact_ng.get("available"):
            console.print(render_summary(frame, result, "cos_ng", title="median cosine to the exact damped NG"))
            for method, reason in comparability_notes(result.rows).items():
                console.print(Text(f"{method}: {reason}"))
        else:
            console.print(Text(f"exact natural gradient not computed: {result.exact_ng.get('reason')}"))
        for name, reason in result.skipped.items():
            console.print(Text(f"skipped {name}: {reason}"))
        for name, message in result.errors.items():
            console.print(Text(f"{name}: {message.splitlines()[0][:300]}"))
        ref = result.reference
        line = (
            f"{suite}: reference {reference} ({backend}) {ref.status} after {ref.steps} steps; "
            f"{len(frame)} rows in {result.wall_time_s:.1f} s"
        )
        if store is not None:
            run_id = store_result(store, result)
            line += f"; stored with reference run {run_id} in {store.display_url}"
        console.print(Text(line))
