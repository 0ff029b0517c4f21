"""Rendering of fleet runs: a progress line on a terminal, a summary table, or one JSON document."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from d1ops.cli.base import confirm_by_typing, emit_json, say, table, warn
from d1ops.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PENDING
from d1ops.support import progress
from d1ops.support.secrets import redact

if TYPE_CHECKING:
    from d1ops.project.config import Environment
    from d1ops.project.project import Project
    from d1ops.project.status import StatusReport
    from d1ops.run.fleet import FleetOptions
    from d1ops.run.fleet_report import FleetProgress, FleetReport


def run_fleet_migrate(project: Project, env: Environment, opts: FleetOptions, *, yes: bool, as_json: bool) -> None:
    from d1ops.run import fleet

    def show(p: FleetProgress) -> None:  # the one progress line (a backup's own steps share it, never garbled)
        progress.step(f"{env.name}: {p.done}/{p.total} databases, {p.failures} failed, {p.rate:.0f}/s", since=p.started)

    try:
        report = fleet.migrate_fleet(project, env, opts, confirm=confirm_by_typing(yes), on_progress=show)
    except fleet.FleetFailed as exc:
        progress.finish()
        if as_json:
            emit_json({**exc.report.to_dict(), "error": redact(exc.message), "exit_code": exc.exit_code})
            click.echo(f"Error: {redact(exc.message)}", err=True)
            sys.exit(exc.exit_code)
        render_fleet(exc.report)
        raise
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. Run the same command to finish the run: {fleet.resume_command(env.name, opts)}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    progress.finish()
    if as_json:
        emit_json(report.to_dict())
    else:
        render_fleet(report)


def render_fleet(report: FleetReport) -> None:
    s = report.summary()
    for message in report.warnings:
        warn(message)
    if report.resumed:
        say(f"Finished the interrupted run {report.resumed} (journal: databases done before were kept).")
    rows = [
        [d.name, d.result, ", ".join(d.applied) or "-", (d.error or "")[:100]]
        for d in report.databases
        if d.result in ("failed",)
    ]
    if rows:
        say(table(["DATABASE", "RESULT", "MIGRATIONS", "ERROR"], rows))
    say(
        table(
            ["ENV", "DATABASES", "APPLIED", "UP TO DATE", "FAILED", "SKIPPED", "API CALLS", "SECONDS"],
            [
                [
                    report.env,
                    s["total"],
                    s["applied"],
                    s["up-to-date"],
                    s["failed"],
                    s["skipped"],
                    s["api_calls"],
                    s["seconds"],
                ]
            ],
        )
    )
    if report.report_path:
        say(f"Report: {report.report_path}")


def show_fleet_status(project: Project, env: Environment, *, names: bool, check: bool, as_json: bool) -> None:
    from d1ops.run import fleet_status

    st = fleet_status.fleet_status(project, env)
    if as_json:
        emit_json(st.to_dict())
    else:
        say(st.describe())
        if names:
            for kind in ("behind", "failed", "drifted", "unreadable"):
                for d in st.databases:
                    if d.state == kind:
                        detail = f"behind by {d.behind}" if kind == "behind" else (d.error or "")[:100]
                        say(f"  {kind:<10} {d.name}  {detail}")
    s = st.summary()
    if s["unreadable"]:
        sys.exit(EXIT_FAILED)
    if check and (s["behind"] or s["failed"] or s["drifted"]):
        sys.exit(EXIT_PENDING)


def add_fleet_columns(project: Project, report: StatusReport, fleets: list[Environment], order: list[str]) -> None:
    from d1ops.errors import D1OpsError
    from d1ops.run import fleet_status

    for env in fleets:
        try:
            st = fleet_status.fleet_status(project, env)
        except D1OpsError as exc:
            fleet_status.add_unread_fleet(report, env, exc.message.splitlines()[0], order)
            continue
        fleet_status.add_fleet_column(report, st, env, order)
