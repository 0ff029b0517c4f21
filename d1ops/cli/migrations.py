"""Commands about migration files and their state: migrate, promote, rollback, rehearse, status, new, lint."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from d1ops.cli.base import (
    cli,
    confirm_by_typing,
    dry_run_option,
    emit_json,
    json_option,
    one_by_one_option,
    pass_project,
    render_run,
    say,
    table,
    want_json,
    warn,
    yes_option,
)
from d1ops.cli.completion import complete_env, complete_migration
from d1ops.errors import EXIT_FAILED, EXIT_PENDING, GateRefused, UsageError

if TYPE_CHECKING:
    from d1ops.project import status
    from d1ops.project.project import Project
    from d1ops.run import rehearse

accept_drift_option = click.option(
    "--accept-drift",
    is_flag=True,
    help="Apply even though the target's schema is not what its applied migrations make (the report records it).",
)

# The core is imported inside each command: `d1ops --help` must not load it (see cli/base.py).


@cli.command()
@click.argument("env", required=False, shell_complete=complete_env)
@dry_run_option
@one_by_one_option
@accept_drift_option
@yes_option
@json_option
@pass_project
def migrate(
    project: Project, env: str | None, dry_run: bool, one_by_one: bool, accept_drift: bool, yes: bool, as_json: bool
) -> None:
    """Apply pending migrations to ENV (default: default_env), in order, through every gate.

    \b
    Example:
      d1ops migrate dev --dry-run && d1ops migrate dev
    """
    from d1ops.changes import migrate as migrate_plan

    want_json(as_json)
    report = migrate_plan.run_migrate(
        project, env, dry_run=dry_run, confirm=confirm_by_typing(yes), one_by_one=one_by_one, accept_drift=accept_drift
    )
    emit_json(report.to_dict()) if as_json else render_run(report)


@cli.command()
@click.option(
    "--to",
    "to",
    shell_complete=complete_env,
    help="Environment to promote into (default: the first one behind its predecessor).",
)
@click.option(
    "--rehearse", "rehearse_first", is_flag=True, help="Rehearse on a scratch copy of the target's data first."
)
@dry_run_option
@one_by_one_option
@accept_drift_option
@yes_option
@json_option
@pass_project
def promote(
    project: Project,
    to: str | None,
    rehearse_first: bool,
    dry_run: bool,
    one_by_one: bool,
    accept_drift: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Apply to an environment exactly what the environment before it has and it lacks.

    \b
    Example:
      d1ops promote --to production --rehearse --dry-run
    """
    from d1ops.changes import migrate as migrate_plan
    from d1ops.run import rehearse
    from d1ops.run.tracking import read_state

    want_json(as_json)
    if rehearse_first:
        target = project.config.env(to) if to else migrate_plan.behind_env(project)
        previous = project.config.predecessor(target)
        only = set(read_state(project.wrangler, previous).applied) if previous else None
        rehearsal = rehearse.rehearse(project, target.name, only=only)
        if not as_json:
            _render_rehearsal(rehearsal)
        if not rehearsal.ok:
            refused = GateRefused(f"The rehearsal on a copy of {target.name} failed: nothing was promoted.")
            if as_json:  # one document: the rehearsal and the error (the group would print a second one)
                emit_json({"rehearsal": rehearsal.to_dict(), "error": refused.message, "exit_code": refused.exit_code})
                click.echo(f"Error: {refused.message}", err=True)
                sys.exit(refused.exit_code)
            raise refused
        to = target.name
    report = migrate_plan.run_promote(
        project, to, dry_run=dry_run, confirm=confirm_by_typing(yes), one_by_one=one_by_one, accept_drift=accept_drift
    )
    emit_json(report.to_dict()) if as_json else render_run(report)


@cli.command("status")
@click.argument("env", required=False, shell_complete=complete_env)
@click.option("--all", "all_envs", is_flag=True, help="Every environment: a matrix of migrations × environments.")
@click.option("--check", is_flag=True, help="Exit 3 when anything is pending or drifted (for CI gates).")
@json_option
@pass_project
def status_cmd(project: Project, env: str | None, all_envs: bool, check: bool, as_json: bool) -> None:
    """Show applied, pending, skipped and drifted migrations.

    Exit codes: 0 every environment shown was read; 1 some could not be (no credentials for a remote one, or an
    error): the others are still shown and the missing ones say why; 3 with --check when something is pending or
    drifted in the environments read (1 wins: an unread environment cannot be vouched for).

    \b
    Example (a CI gate: exit 3 when anything is pending or drifted):
      d1ops status --all --check
    """
    from d1ops.project import status

    want_json(as_json)
    if all_envs and env:
        raise UsageError("Give an environment or --all, not both.")
    envs = list(project.config.environments) if all_envs else [project.config.env(env)]
    report = status.status_of(project, envs)
    if as_json:
        emit_json(report.to_dict())
    else:
        _render_status(report)
    if not report.complete:
        sys.exit(EXIT_FAILED)
    if check and report.needs_attention:
        if not as_json:
            say("status --check: pending or drifted migrations found.", err=True)
        sys.exit(EXIT_PENDING)


def _render_status(report: status.StatusReport) -> None:
    from d1ops.project import status

    for warning in report.warnings:
        warn(warning)
    single = len(report.envs) == 1
    if single:
        env = report.envs[0]
        rows: list[list[Any]] = [
            [
                m.name,
                m.envs[env].status,
                m.envs[env].applied_at,
                (m.envs[env].checksum or m.file_checksum or "")[:12],
            ]
            for m in report.migrations
        ]
        say(table(["MIGRATION", "STATUS", "APPLIED_AT", "CHECKSUM"], rows))
    else:
        rows = [
            [m.name]
            + [
                f"{c.status} {c.applied_at[:10]}" if c.status == status.APPLIED and c.applied_at else c.status
                for c in (m.envs[e] for e in report.envs)
            ]
            for m in report.migrations
        ]
        say(table(["MIGRATION", *[e.upper() for e in report.envs]], rows))
    for env in report.envs:
        if env in report.unavailable:
            click.echo(f"{env}: {report.unavailable[env]}.")
            continue
        pending = report.count(status.PENDING, env)
        drifted = report.count(status.DRIFTED, env)
        lock = report.locks.get(env)
        extra = f", {drifted} drifted" if drifted else ""
        extra += f", locked by {lock}" if lock else ""
        schema = report.schema_drift.get(env, [])
        extra += f", {len(schema)} schema object(s) drifted" if schema else ""
        say(f"{env}: {report.count(status.APPLIED, env)} applied, {pending} pending{extra}.")
        for item in schema:
            say(f"  drift: {item.describe()}")


@cli.command("diff")
@click.argument("first", shell_complete=complete_env)
@click.argument("second", shell_complete=complete_env)
@click.option("--check", is_flag=True, help="Exit 3 when the schemas differ (for CI gates).")
@json_option
@pass_project
def diff_cmd(project: Project, first: str, second: str, check: bool, as_json: bool) -> None:
    """Compare the live schemas of two environments, object by object (tables, indexes, views, triggers).

    \b
    Example (before a release):
      d1ops diff staging production
    """
    from d1ops.project import status

    want_json(as_json)
    a, b = project.config.env(first), project.config.env(second)
    if a.name == b.name:
        raise UsageError("Give two different environments.")
    items = status.diff_envs(project, a, b)
    if as_json:
        emit_json({"first": a.name, "second": b.name, "differences": [d.to_dict() for d in items]})
    else:
        where = {"missing": f"only in {a.name}", "extra": f"only in {b.name}", "changed": "differs"}
        for d in items:
            say(f"{where[d.kind]}: {d.type} {d.name}")
            if d.expected_sql:
                say(f"  {a.name}: {d.expected_sql}")
            if d.live_sql:
                say(f"  {b.name}: {d.live_sql}")
        say(f"{a.name} and {b.name}: " + (f"{len(items)} schema object(s) differ." if items else "same schema."))
    if check and items:
        sys.exit(EXIT_PENDING)


@cli.command()
@click.argument("name")
@pass_project
def new(project: Project, name: str) -> None:
    """Create the next migration file, NNNN_NAME.sql (and its down file, migrations/down/NNNN_NAME.sql).

    \b
    Example:
      d1ops new add_users_email
    """
    from d1ops.project import migrations

    path = migrations.new_migration(project.config.migrations_dir, name)
    say(f"Created {path.relative_to(project.config.root)}")


@cli.command()
@json_option
@pass_project
def lint(project: Project, as_json: bool) -> None:
    """Check the migrations folder: names, numbering, encoding, SQL remote D1 rejects, and what D1 does to
    data (drops that fire ON DELETE in other tables, PRAGMA foreign_keys, destructive statements without
    `-- d1ops: destructive <reason>`). Exit 1 on errors.

    \b
    Example:
      d1ops lint --json
    """
    want_json(as_json)
    found = project.migrations()
    if as_json:
        emit_json([f.to_dict() for f in found.findings])
    else:
        for f in found.findings:
            at = f":{f.line}" if f.line else ""
            rule = f" [{f.rule}]" if f.rule else ""
            say(f"{f.level}: {f.file}{at}:{rule} {f.message}")
        say(f"{len(found.files)} migration(s), {len(found.errors)} error(s), {len(found.warnings)} warning(s).")
    if found.errors:
        sys.exit(1)


@cli.command()
@click.argument("env", shell_complete=complete_env)
@click.option(
    "--to",
    "to",
    shell_complete=complete_migration,
    help="Undo the migrations applied after this one (default: only the last one).",
)
@click.option("--steps", type=int, help="Undo the last N applied migrations.")
@dry_run_option
@accept_drift_option
@yes_option
@json_option
@pass_project
def rollback(
    project: Project,
    env: str,
    to: str | None,
    steps: int | None,
    dry_run: bool,
    accept_drift: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Undo the last applied migrations of ENV with their down files (migrations/down/), newest first,
    all or nothing.

    \b
    Example:
      d1ops rollback staging --to 0003_add_orders.sql --dry-run
    """
    from d1ops.changes import rollback as rollback_plan

    want_json(as_json)
    confirm = confirm_by_typing(yes)
    report = rollback_plan.run_rollback(
        project, env, to=to, steps=steps, dry_run=dry_run, confirm=confirm, accept_drift=accept_drift
    )
    if as_json:
        emit_json(report.to_dict())
        return
    for warning in report.warnings:
        warn(warning)
    if not report.plan:
        say(f"{env}: nothing to roll back.")
    elif dry_run:
        say(f"Rollback plan (dry run) for {env}, newest first:")
        say("".join(f"  {name}\n" for name in report.plan).rstrip("\n"))
    else:
        render_run(report)


@cli.command("rehearse")
@click.argument("env", required=False, shell_complete=complete_env)
@json_option
@pass_project
def rehearse_cmd(project: Project, env: str | None, as_json: bool) -> None:
    """Apply ENV's pending migrations to a scratch copy of its data, one by one, and report each one's effect.
    ENV itself is only read.

    \b
    Example:
      d1ops rehearse production
    """
    from d1ops.run import rehearse

    want_json(as_json)
    result = rehearse.rehearse(project, project.config.env(env).name)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render_rehearsal(result)
    if not result.ok:
        sys.exit(1)


def _render_rehearsal(result: rehearse.Rehearsal) -> None:
    if not result.migrations:
        say(f"{result.env}: nothing pending to rehearse.")
        return
    copied = sum(result.copied_rows.values())
    say(f"Rehearsal on a scratch copy of {result.env} ({copied} rows in {len(result.copied_rows)} tables):")
    rows = []
    for m in result.migrations:
        changed = ", ".join(f"{t} {n:+d}" for t, n in m.rows_changed.items()) or "-"
        made = [f"+{t}" for t in m.tables_created] + [f"-{t}" for t in m.tables_dropped]
        checks = f"{sum(1 for c in m.checks if c['passed'])}/{len(m.checks)}" if m.checks else "-"
        rows.append([m.name, m.result, m.duration_ms, changed + (f" ({' '.join(made)})" if made else ""), checks])
    say(table(["MIGRATION", "RESULT", "MS", "ROWS CHANGED", "CHECKS"], rows))
    for m in result.migrations:
        if m.error:
            say(f"{m.name}: {m.error}" + (f"\n  statement: {m.statement}" if m.statement else ""))
        for c in m.checks:
            if not c["passed"]:
                say(f"{m.name}: check failed: {c['sql']} -> {c.get('error') or c.get('value')}")
    verdict = "every migration applied" if result.ok else "FAILED"
    say(f"{verdict}; {result.env} was not changed ({result.wrangler_processes} wrangler processes).")
