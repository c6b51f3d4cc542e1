"""``ngbench sweep`` and ``ngbench nightly``: many runs, many devices, one database.

Both validate the sweep file completely and reach the database before any worker starts; bad
input gets one message and exit status 2. A sweep that was interrupted (Ctrl-C, SIGTERM)
exits with 130 after storing the in-flight runs as ``interrupted``; ``--resume`` (or running
the same file again) completes what is missing.

Exit statuses (docs/cli.md): 0 every run gave a result of the method (a diverged run, one out
of memory or one that missed its target is a result); 3 some run failed to give one
(``crashed``, ``error``, ``timeout``: :data:`harness.orchestrator.RUN_FAILURE_STATUSES`), unless
``--allow-failures``; 130 interrupted; 2 bad input; nightly also 1 for a flagged regression.

A sweep file with ``trials`` runs the tuned track (:mod:`harness.tuning`): the trials of every
study, the selection, then the re-runs of each chosen configuration, in one sweep row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from harness import nightly as nightly_mod
from harness import nightly_step_cost, plans
from harness.commands.runs import DbOption, fmt_seconds, make_console
from harness.errors import USER_ERRORS, ConfigError, DatabaseError
from harness.orchestrator import RUN_FAILURE_STATUSES
from harness.sweep import load_config, parse_devices
from harness.sweep.schema import StepCostSettings
from leaderboard.catalogue import suite_catalogue
from leaderboard.ranking import protocol_deviation

ExecutorOption = Annotated[str, typer.Option("--executor", help="local (this machine) or ray (a Ray cluster).")]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Parallel workers on the CPU (local) or concurrent Ray tasks.")
]
DevicesOption = Annotated[
    str | None,
    typer.Option("--devices", help='"cpu", or GPU indices "0,1,3" (one worker each); default: every GPU, else CPU.'),
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue the newest sweep of this name (only missing runs execute).")
]
TagOption = Annotated[str | None, typer.Option("--tag", help="Tag stored with the sweep and every run.")]
RayAddressOption = Annotated[
    str | None, typer.Option("--ray-address", help='Ray cluster to join ("auto", "ray://head:10001"); default local.')
]
IsolationOption = Annotated[
    str, typer.Option("--isolation", help="fork (warm launcher, fresh child per run) or spawn (new interpreter).")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Validate and list the runs; run nothing.")]
AllowFailuresOption = Annotated[
    bool,
    typer.Option(
        "--allow-failures",
        help="Exit 0 even when runs crashed, errored or timed out (they are stored as results).",
    ),
]

#: Exit status of a sweep (or nightly) in which some run crashed, errored or timed out.
EXIT_RUN_FAILURES = 3


def exit_interrupted(summary: Any) -> None:
    """Exit 130 after an interrupt; after a second Ctrl-C without the interpreter's teardown
    (seconds for torch under load: the user asked to stop now, and everything is stored)."""
    parts = [summary.trials, summary.reruns] if hasattr(summary, "selections") else [summary]
    if any(getattr(p, "hurried", False) for p in parts if p is not None):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise typer.Exit(130)


def failures_of(summary: Any) -> dict[str, int]:
    """Failed runs by status (``crashed``, ``error``, ``timeout``) of a sweep, or of both phases
    of a tuned one."""
    parts = [summary.trials, summary.reruns] if hasattr(summary, "selections") else [summary]
    out: dict[str, int] = {}
    for part in parts:
        if part is None:
            continue
        for status, n in part.statuses.items():
            if status in RUN_FAILURE_STATUSES and n:
                out[status] = out.get(status, 0) + n
    return dict(sorted(out.items()))


def failure_text(failures: dict[str, int], allowed: bool) -> str:
    """The summary's verdict on failed runs (empty when there are none)."""
    if not failures:
        return ""
    listed = ", ".join(f"{n} {status}" for status, n in failures.items())
    total = sum(failures.values())
    if allowed:
        return f"{total} run(s) failed ({listed}); exit status 0 (--allow-failures)"
    return (
        f"FAILED: {total} run(s) failed ({listed}); exit status {EXIT_RUN_FAILURES} "
        "(their errors: `ngbench runs --status STATUS`; --allow-failures exits 0)"
    )


def _plan(path: Path, tag: str | None, devices: str | None, workers: int | None) -> tuple[Any, Any, int | None]:
    config = load_config(path)
    if tag is not None:
        config = dataclasses.replace(config, tag=tag)
    devs = parse_devices(devices) if devices is not None else config.devices
    return plans.expand(config, where=str(path)), devs, workers if workers is not None else config.workers


def _hp_text(hparams: dict[str, Any], preset: str | None) -> str:
    hp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items()) or "-"
    return f"preset={preset} {hp}" if preset else hp


def _print_plan(plan: Any) -> None:
    out = make_console()
    columns = ["#", "suite", "optimizer", "backend", "seed", "hparams", "steps", "timeout"]
    if plan.tuned:
        columns.insert(4, "trial")
    table = Table(*columns)
    for i, s in enumerate(plan.specs):
        row = [
            str(i),
            Text(s.suite),
            Text(s.optimizer),
            s.board_backend,
            str(s.seed),
            Text(_hp_text(s.hparams, s.preset)),
            str(s.steps or "suite"),
            fmt_seconds(s.timeout_s),
        ]
        if plan.tuned:
            row.insert(4, str(plan.role_of(i).trial))
        table.add_row(*row)
    out.print(table)
    if plan.tuned:
        p = plan.config.tuning
        out.print(
            Text(
                f"{plan.name}: {len(plan.studies)} tuning studies, {len(plan.specs)} trials on seed {p.trial_seed} "
                f"({p.sampler}, study seed {p.study_seed}); then each study's chosen configuration re-run on seeds "
                f"{', '.join(map(str, p.rerun_seeds))} ({len(plan.studies) * len(p.rerun_seeds)} runs)"
            )
        )
    else:
        out.print(Text(f"{plan.name}: {len(plan.specs)} runs"))
    for note in plan.skipped:
        out.print(Text(f"  skipped: {note}"))
    for line in unranked_lines(plan.specs, "will be stored but not ranked"):
        out.print(Text(line))


def unranked_lines(specs: Any, what: str) -> list[str]:
    """Which runs the board will not rank and why (``leaderboard.ranking.protocol_deviation``):
    a run that overrides its suite's budget or evaluation cadence is shown, never scored."""
    catalogue = suite_catalogue()
    reasons: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        reason = protocol_deviation(dataclasses.asdict(spec), catalogue.get(spec.suite))
        if reason:
            reasons.setdefault(f"{spec.suite}: {reason}", []).append(i)
    if not reasons:
        return []
    total = sum(len(v) for v in reasons.values())
    lines = [f"  {total} of {len(specs)} run(s) {what} (a board scores only the suite's own protocol):"]
    for reason, indices in reasons.items():
        shown = ", ".join(f"#{i}" for i in indices[:8]) + (", ..." if len(indices) > 8 else "")
        lines.append(f"    {shown}: {reason}")
    return lines


def _summary_text(summary: Any, store: Any) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())) or "nothing ran"
    parts = [
        f"sweep {summary.name!r} (id {summary.sweep_id}{', resumed' if summary.resumed else ''}) "
        f"{'INTERRUPTED' if summary.interrupted else 'finished'} in {summary.wall_s:.1f} s on {summary.executor}",
        f"  {summary.planned} planned; {summary.skipped_finished} already finished (skipped); "
        f"{summary.ran} ran: {statuses}",
        f"  stored {summary.stored} run(s) in {store.display_url}",
    ]
    if summary.discarded:
        parts.append(f"  {summary.discarded} result(s) not stored: another sweep finished the same run first")
    if summary.leased_elsewhere:
        parts.append(f"  {summary.leased_elsewhere} run(s) left to another running sweep that had claimed them")
    if summary.relaunched:
        parts.append(
            f"  the worker launcher died and was restarted; {summary.relaunched} in-flight run start(s) were "
            "repeated (each run stored once)"
        )
    if summary.duplicates_in_plan:
        parts.append(f"  {summary.duplicates_in_plan} duplicate run(s) in the plan were run once")
    if summary.key_mismatches:
        parts.append(
            f"  {summary.key_mismatches} run(s) got a different key on their worker than expected "
            "(heterogeneous workers?); stored under the worker's key"
        )
    if summary.recovered:
        parts.append(
            f"  {summary.recovered} result(s) could not be stored; kept in {summary.recovery_file} "
            f"(ngbench db recover {summary.recovery_file})"
        )
    if summary.interrupted:
        parts.append("  resume with the same command and --resume")
    return "\n".join(parts)


def raise_if_kept(summary: Any) -> None:
    """A sweep whose storage failed ends with the documented one-line storage error (exit 2)."""
    phases = [summary.trials, summary.reruns] if hasattr(summary, "selections") else [summary]
    for phase in phases:
        if phase is not None and phase.recovered:
            raise DatabaseError(
                f"{phase.storage_error}; {phase.recovered} result(s) kept in {phase.recovery_file}: "
                f"store them with `ngbench db recover {phase.recovery_file}`"
            )


def _tuned_text(result: Any) -> str:
    """Each study's choice (or why it has none), then both phases' summaries."""
    lines = []
    for sel in result.selections:
        study = sel.study
        if sel.chosen is None:
            lines.append(f"  {study.label}: {sel.reason}")
        else:
            lines.append(
                f"  {study.label}: trial {sel.chosen.index} of {len(study.trials)} "
                f"[{_hp_text(sel.chosen.point, study.preset)}] (config {sel.chosen.config_hash})"
            )
    return "\n".join(lines)


def run_plan(
    kind: str,
    plan: Any,
    executor: str,
    devs: Any,
    n_workers: int | None,
    resume: bool,
    db: str | None,
    ray_address: str | None,
    isolation: str,
    default_workers: int | None = None,
) -> tuple[Any, Any]:
    """Run a validated plan (:func:`harness.plans.run_plan`: progress on stderr) and print its
    summary; ``(summary, store)``. For a tuned plan the summary is a :class:`harness.tuning.TuneSummary`."""
    result, store = plans.run_plan(
        kind,
        plan,
        executor,
        devs,
        n_workers,
        resume,
        db,
        ray_address,
        isolation,
        console=make_console(stderr=True),
        default_workers=default_workers,
    )
    out = make_console()
    if not plan.tuned:
        out.print(Text(_summary_text(result, store)))
        for line in unranked_lines(plan.specs, "stored but not ranked"):
            out.print(Text(line))
        return result, store
    out.print(Text(_summary_text(result.trials, store).replace("sweep ", "tuned sweep ", 1) + " [trials]"))
    if result.selections:
        out.print(Text("chosen configurations:\n" + _tuned_text(result)))
    if result.reruns is not None:
        out.print(Text(_summary_text(result.reruns, store) + " [re-runs]"))
    return result, store


def _execute(
    kind: str,
    sweep_file: Path,
    executor: str,
    workers: int | None,
    devices: str | None,
    resume: bool,
    db: str | None,
    tag: str | None,
    ray_address: str | None,
    isolation: str,
    dry_run: bool,
) -> tuple[Any, Any] | None:
    plan, devs, n_workers = _plan(sweep_file, tag, devices, workers)
    if plan.config.step_cost is not None:
        make_console(stderr=True).print(Text("note: [step_cost] is measured by `ngbench nightly` only; ignored here"))
    if dry_run:
        _print_plan(plan)
        return None
    return run_plan(kind, plan, executor, devs, n_workers, resume, db, ray_address, isolation)


def measure_step_cost(
    store: Any, sweep_id: int, settings: StepCostSettings, backends: tuple[str, ...], thresholds: nightly_mod.Thresholds
) -> dict[str, Any]:
    """The nightly's step-cost table (:mod:`harness.nightly_step_cost`), measured and stored; its
    report section. Whatever goes wrong there is recorded, never the end of the nightly."""
    environment = nightly_mod.sweep_environment(store, sweep_id)
    try:
        section = nightly_step_cost.measure_and_store(
            store, settings, backends, environment, k=thresholds.k, min_rel=thresholds.min_rel
        )
    except Exception as exc:  # the runs and their report come first
        section = {"status": "failed", "settings": settings.to_dict(), "tables": [], "items": []}
        section["error"] = f"{type(exc).__name__}: {exc}"
    notes, warnings = nightly_step_cost.lines(section)
    if section.get("error"):
        warnings.append(f"step-cost table not stored: {section['error']}")
    for line in notes:
        make_console().print(Text(line))
    for line in warnings:
        make_console(stderr=True).print(Text(f"ngbench: warning: {line}"))
    return section


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        sweep_file: Annotated[Path, typer.Argument(help="Sweep file (TOML).", metavar="SWEEP.toml")],
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
        allow_failures: AllowFailuresOption = False,
    ) -> None:
        """Run every (suite x optimizer x backend x hyperparameters x seed) of a sweep file, each in a
        fresh worker process; only runs not finished yet execute."""
        done = _execute(
            "sweep", sweep_file, executor, workers, devices, resume, db, tag, ray_address, isolation, dry_run
        )
        if done is None:
            return
        summary, _ = done
        failures = failures_of(summary)
        if failures:
            make_console().print(Text(failure_text(failures, allow_failures)))
        if json_out:
            print(json.dumps(summary_json(summary)))
        raise_if_kept(summary)
        if summary.interrupted:
            exit_interrupted(summary)
        if failures and not allow_failures:
            raise typer.Exit(EXIT_RUN_FAILURES)

    @app.command("nightly")
    def nightly(
        sweep_file: Annotated[Path, typer.Argument(help="Sweep file (TOML).", metavar="SWEEP.toml")],
        executor: ExecutorOption = "local",
        workers: WorkersOption = None,
        devices: DevicesOption = None,
        resume: ResumeOption = False,
        db: DbOption = None,
        tag: TagOption = None,
        ray_address: RayAddressOption = None,
        isolation: IsolationOption = "fork",
        report_json: Annotated[
            Path | None, typer.Option("--report-json", help="Also write the regression report here (JSON).")
        ] = None,
        site_dir: Annotated[Path, typer.Option("--site-dir", help="Where to rebuild the static site.")] = Path("site"),
        no_site: Annotated[bool, typer.Option("--no-site", help="Do not rebuild the site.")] = False,
        baseline: Annotated[
            int | None, typer.Option("--baseline", help="Compare with this sweep id instead of the previous nightly.")
        ] = None,
        fail_on_regression: Annotated[
            bool, typer.Option("--fail-on-regression", help="Exit 1 when a slowdown or regression is flagged.")
        ] = False,
        show_all: Annotated[bool, typer.Option("--all", help="List unchanged items too.")] = False,
        k: Annotated[float, typer.Option("--k", min=0.0, help="Noise multiplier of the step-detection band.")] = 3.0,
        min_rel: Annotated[
            float, typer.Option("--min-rel", min=0.0, help="Smallest flagged change of step time or memory.")
        ] = 0.05,
        min_effect: Annotated[
            float, typer.Option("--min-effect", min=0.0, help="Smallest flagged change of time-to-target or loss.")
        ] = 0.02,
        alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Test level (convergence).")] = 0.05,
        allow_failures: AllowFailuresOption = False,
        step_cost: Annotated[
            bool | None,
            typer.Option(
                "--step-cost/--no-step-cost",
                help="After the runs, measure and store the step-cost table (default: as the sweep file's step_cost).",
            ),
        ] = None,
    ) -> None:
        """Run a sweep as a new nightly, compare it with the previous nightly on this machine, store
        and print the regression report, and rebuild the site."""
        plan, devs, n_workers = _plan(sweep_file, tag, devices, workers)
        measure = nightly_step_cost.settings_for(plan.config.step_cost, step_cost)
        if measure is not None and (problem := nightly_step_cost.checkout_problem()) is not None:
            raise ConfigError(problem)
        summary, store = run_plan("nightly", plan, executor, devs, n_workers, resume, db, ray_address, isolation)
        raise_if_kept(summary)
        if summary.interrupted:
            make_console(stderr=True).print("nightly interrupted: no report written (resume with --resume)")
            exit_interrupted(summary)
        thresholds = nightly_mod.Thresholds(k=k, min_rel=min_rel, alpha=alpha, min_effect=min_effect)
        report = nightly_mod.compare(store, summary.sweep_id, baseline, thresholds=thresholds)
        if measure is not None:
            report["step_cost"] = measure_step_cost(store, summary.sweep_id, measure, plan.backends, thresholds)
        store.set_sweep_report(summary.sweep_id, report)
        nightly_mod.render(report, make_console(), show_all=show_all)
        if report_json is not None:
            report_json.parent.mkdir(parents=True, exist_ok=True)
            report_json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        if report.get("step_cost", {}).get("status") == "interrupted":
            make_console(stderr=True).print(
                "nightly interrupted during the step-cost table: report stored, site not rebuilt"
            )
            raise typer.Exit(130)
        code = 1 if fail_on_regression and nightly_mod.has_regressions(report) else 0
        failures = failures_of(summary)
        if failures:
            make_console().print(Text(failure_text(failures, allow_failures)))
            if not allow_failures:
                code = EXIT_RUN_FAILURES
        if not no_site:
            try:
                make_console().print(Text(nightly_mod.rebuild_site(store, str(site_dir))))
            except USER_ERRORS as exc:  # the report is stored already; say why the site is not
                make_console(stderr=True).print(Text(f"ngbench: error: site not rebuilt: {exc}"))
                code = code or 2
        if code:
            raise typer.Exit(code)


def summary_json(summary: Any) -> dict[str, Any]:
    """The ``--json`` summary of a plain sweep, or of both phases and the choices of a tuned one."""
    if hasattr(summary, "selections"):
        return {
            "sweep_id": summary.sweep_id,
            "interrupted": summary.interrupted,
            "trials": _summary_json(summary.trials),
            "reruns": _summary_json(summary.reruns) if summary.reruns is not None else None,
            "studies": [
                {**s.to_dict(), "point": s.chosen.point if s.chosen else None, "ranking": [r.trial for r in s.ranking]}
                for s in summary.selections
            ],
        }
    return _summary_json(summary)


def _summary_json(summary: Any) -> dict[str, Any]:
    return {
        "sweep_id": summary.sweep_id,
        "name": summary.name,
        "kind": summary.kind,
        "planned": summary.planned,
        "skipped_finished": summary.skipped_finished,
        "stored": summary.stored,
        "discarded": summary.discarded,
        "statuses": dict(summary.statuses),
        "interrupted": summary.interrupted,
        "failed": sum(summary.failures.values()),
        "leased_elsewhere": summary.leased_elsewhere,
        "relaunched": summary.relaunched,
        "wall_s": summary.wall_s,
    }
