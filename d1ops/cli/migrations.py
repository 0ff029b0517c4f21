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
from d1ops.errors import EXIT_FAILED, EXIT_PENDING, UsageError

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
@click.option("--only", "only", multiple=True, metavar="NAME", help="Fleet: only these databases (names or globs).")
@click.option("--except", "exclude", multiple=True, metavar="NAME", help="Fleet: leave these databases out.")
@click.option(
    "--canary", type=click.IntRange(min=0), default=0, help="Fleet: migrate N first; go on only if all succeed."
)
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=16, show_default=True, help="Fleet: databases at once."
)
@click.option("--keep-going", is_flag=True, help="Fleet: go on after a failure and report every one.")
@click.option(
    "--backup", "fleet_backup", is_flag=True, help="Fleet: a verified backup of each database before its apply."
)
@click.option("--shard", metavar="K/N", help="Fleet: only shard K of N (a hash of the name), its own journal.")
@yes_option
@json_option
@pass_project
def migrate(
    project: Project,
    env: str | None,
    dry_run: bool,
    one_by_one: bool,
    accept_drift: bool,
    only: tuple[str, ...],
    exclude: tuple[str, ...],
    canary: int,
    concurrency: int,
    keep_going: bool,
    fleet_backup: bool,
    shard: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Apply pending migrations to ENV (default: default_env), in order, through every gate.

    A fleet environment (`fleet: "tenant-*"` or `fleet_file:`) migrates each of its databases through the D1
    API, --concurrency at a time; a killed run is finished by running the same command again.

    \b
    Example:
      d1ops migrate dev --dry-run && d1ops migrate dev
      d1ops migrate tenants --canary 5 --keep-going --json
    """
    want_json(as_json)
    target = project.config.env(env)
    fleet_flags = bool(only or exclude or canary or keep_going or fleet_backup or shard or concurrency != 16)
    if target.is_fleet:
        from d1ops.cli.fleet import run_fleet_migrate
        from d1ops.run.fleet import FleetOptions

        opts = FleetOptions(only, exclude, canary, concurrency, keep_going, fleet_backup, shard, dry_run, accept_drift)
        run_fleet_migrate(project, target, opts, yes=yes, as_json=as_json)
        return
    if fleet_flags:
        raise UsageError(
            f"--only, --except, --canary, --concurrency, --keep-going, --backup and --shard are for fleet "
            f"environments; {target.name} is one database."
        )
    from d1ops.changes import migrate as migrate_plan

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

    want_json(as_json)
    report = migrate_plan.run_promote(
        project,
        to,
        dry_run=dry_run,
        confirm=confirm_by_typing(yes),
        one_by_one=one_by_one,
        accept_drift=accept_drift,
        rehearse=rehearse_first,
    )
    if as_json:
        emit_json(report.to_dict())
        return
    if "rehearsal" in report.details:
        _render_rehearsal(report.details["rehearsal"])
    render_run(report)


@cli.command("status")
@click.argument("env", required=False, shell_complete=complete_env)
@click.option("--all", "all_envs", is_flag=True, help="Every environment: a matrix of migrations × environments.")
@click.option("--check", is_flag=True, help="Exit 3 when anything is pending or drifted (for CI gates).")
@click.option("--names", is_flag=True, help="Fleet: list the databases behind, failed or drifted by name.")
@json_option
@pass_project
def status_cmd(project: Project, env: str | None, all_envs: bool, check: bool, names: bool, as_json: bool) -> None:
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
    if len(envs) == 1 and envs[0].is_fleet:
        from d1ops.cli.fleet import show_fleet_status

        show_fleet_status(project, envs[0], names=names, check=check, as_json=as_json)
        return
    fleets = [e for e in envs if e.is_fleet]
    single = [e for e in envs if not e.is_fleet]
    report = status.status_of(project, single) if single else status.empty_report(project)
    if fleets:
        from d1ops.cli.fleet import add_fleet_columns

        add_fleet_columns(project, report, fleets, [e.name for e in envs])
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
        if env in report.fleets:
            say(report.fleets[env]["describe"])
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
    down = path.parent / migrations.DOWN_DIR / path.name
    say(f"Created {path.relative_to(project.config.root)} (the migration)")
    say(f"Created {down.relative_to(project.config.root)} (its rollback: write there what undoes it)")


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
        sys.exit(EXIT_FAILED)


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
@accept_drift_option
@json_option
@pass_project
def rehearse_cmd(project: Project, env: str | None, accept_drift: bool, as_json: bool) -> None:
    """Apply ENV's pending migrations to a scratch copy of its data, one by one, and report each one's effect:
    rows inserted, updated and deleted per table, rows lost to ON DELETE actions (and whether the row guard
    would refuse them), and whether ENV's schema has drifted. ENV itself is only read.

    \b
    Example:
      d1ops rehearse production
    """
    from d1ops.run import rehearse

    want_json(as_json)
    result = rehearse.rehearse(project, project.config.env(env).name, accept_drift=accept_drift)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render_rehearsal(result)
    if not result.ok:
        sys.exit(EXIT_FAILED)


def _rows_text(rows: dict[str, dict[str, int]]) -> str:
    """`events +3 ~20003`, `members -500`: inserted, updated, deleted (only what is not 0)."""
    parts = []
    signs = (("+", "inserted"), ("~", "updated"), ("-", "deleted"))
    for name, n in rows.items():
        counts = [f"{sign}{n[key]}" for sign, key in signs if n[key]]
        parts.append(f"{name} {' '.join(counts) or '0'}")
    return ", ".join(parts) or "-"


def _render_rehearsal(result: rehearse.Rehearsal) -> None:
    for d in result.drift or []:
        say(f"{result.env} has drifted: {d['kind']} {d['type']} {d['name']}")
    if result.drift:
        accepted = "accepted (--accept-drift)" if result.drift_accepted else "migrate would refuse it"
        say(f"{result.env}'s schema is not what its applied migrations make: {accepted}.")
    elif result.drift is None:
        say(f"Whether {result.env} has drifted cannot be told (its history does not replay here).")
    for f in result.lint:
        say(f"lint: {f['file']}:{f['line']} [{f['rule']}] {f['message']}")
    if result.lint:
        say("migrate refuses these files until they are fixed (or the loss declared); the rehearsal shows why:")
    if not result.migrations:
        say(f"{result.env}: nothing pending to rehearse.")
        return
    copied = sum(result.copied_rows.values())
    say(f"Rehearsal on a scratch copy of {result.env} ({copied} rows in {len(result.copied_rows)} tables):")
    rows = []
    for m in result.migrations:
        made = [f"+{t}" for t in m.tables_created] + [f"-{t}" for t in m.tables_dropped]
        checks = f"{sum(1 for c in m.checks if c['passed'])}/{len(m.checks)}" if m.checks else "-"
        changed = _rows_text(m.rows) + (f" ({' '.join(made)})" if made else "")
        rows.append([m.name, m.result, m.duration_ms, changed, m.row_guard if m.result != "not run" else "-", checks])
    say(table(["MIGRATION", "RESULT", "MS", "ROWS (+inserted ~updated -deleted)", "ROW GUARD", "CHECKS"], rows))
    for m in result.migrations:
        for v in m.victims:
            declared = f"; declared: {v['declared']}" if v["declared"] is not None else ""
            cause = f" ({v['cause']})" if v["cause"] else ""
            say(f"{m.name}: {v['table']} would lose {v['lost']} {v['what']}{cause}{declared}")
        if m.error:
            say(f"{m.name}: {m.error}" + (f"\n  statement: {m.statement}" if m.statement else ""))
        for c in m.checks:
            if not c["passed"]:
                say(f"{m.name}: check failed: {c['sql']} -> {c.get('error') or c.get('value')}")
    applied = all(m.result == "applied" for m in result.migrations)
    verdict = "FAILED" if not applied else "every migration applied"
    if applied and not result.ok:
        verdict += " on the copy, but migrate would refuse (above)"
    say(f"{verdict}; {result.env} was not changed ({result.wrangler_processes} wrangler processes).")
