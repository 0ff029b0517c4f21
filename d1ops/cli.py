"""The command line: parse, call one core function, render (human text or --json), map errors to exit codes.

Only this module imports click.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from d1ops import about, backup, catalog, migrations, pipeline, rehearse, remote, status, verify
from d1ops.config import Environment
from d1ops.errors import EXIT_PENDING, D1OpsError, GateRefused, UsageError
from d1ops.plans import execute as execute_plan
from d1ops.plans import migrate as migrate_plan
from d1ops.plans import restore as restore_plan
from d1ops.plans import rollback as rollback_plan
from d1ops.plans import unlock as unlock_plan
from d1ops.project import Project, open_project
from d1ops.render import size, text_table
from d1ops.tracking import read_state
from d1ops.wrangler import redact

# -- shared options ---------------------------------------------------------------------------------------------
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else.")
dry_run_option = click.option("-n", "--dry-run", is_flag=True, help="Show the plan; change nothing.")
one_by_one_option = click.option(
    "--one-by-one",
    is_flag=True,
    help="One wrangler call per migration, as wrangler does: the ones before a failure stay applied. "
    "(Default: all pending migrations in one atomic batch, all or nothing.)",
)
yes_option = click.option(
    "-y",
    "--yes",
    is_flag=True,
    envvar="D1OPS_YES",
    help="Confirm changes to a protected environment without asking (for CI; or set D1OPS_YES=1).",
)


def pass_project(func: Callable[..., Any]) -> Callable[..., Any]:
    """Open the project (config + wrangler) from the group's --config and pass it first."""

    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return func(open_project(ctx.obj.get("config")), *args, **kwargs)

    return wrapper


class D1OpsGroup(click.Group):
    """Turns every D1OpsError into its exit code and a message that says what to do next."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except pipeline.RunFailed as exc:
            if ctx.meta.get("d1ops.json"):
                _emit_json(exc.report.to_dict())
            _fail(exc)
        except D1OpsError as exc:
            if ctx.meta.get("d1ops.json"):
                _emit_json({"error": redact(exc.message), "exit_code": exc.exit_code})
            _fail(exc)


def _fail(exc: D1OpsError) -> NoReturn:
    click.echo(f"Error: {redact(exc.message)}", err=True)
    sys.exit(exc.exit_code)


def _emit_json(data: Any) -> None:
    click.echo(redact(json.dumps(data, indent=2, default=str)))


def _want_json(as_json: bool) -> None:
    click.get_current_context().meta["d1ops.json"] = as_json


def confirm_by_typing(yes: bool) -> pipeline.Confirm:
    """Protected environments: type the environment's name; --yes (or D1OPS_YES=1) for CI; no TTY refuses."""

    def confirm(env: Environment, description: str) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise GateRefused(
                f"{env.name} is protected and there is no terminal to confirm on. Review the plan with "
                f"--dry-run, then run again with --yes (or D1OPS_YES=1) to confirm."
            )
        click.echo(description, err=True)
        typed = click.prompt(f"{env.name} is protected. Type its name to continue", err=True, default="")
        if typed.strip() != env.name:
            raise GateRefused(f"Confirmation did not match '{env.name}': nothing was changed.")

    return confirm


# -- rendering ----------------------------------------------------------------------------------------------------
table = text_table


def render_run(report: pipeline.RunReport) -> None:
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    head = "Plan (dry run)" if report.dry_run else "Plan"
    if not report.plan:
        click.echo(f"{report.env}: nothing to apply; {report.env} is up to date.")
    elif report.dry_run:
        click.echo(f"{head} for {report.env}: {len(report.plan)} migration(s) would be applied:")
        for name in report.plan:
            click.echo(f"  {name}")
    if report.skipped:
        click.echo(f"Skipped on {report.env} (skip list): {', '.join(report.skipped)}")
    if report.backup:
        b = report.backup
        if "would_take" in b:
            need = "required" if b["required"] else "optional"
            click.echo(f"Would take a backup first ({need}, verify {b['verify']}): {b['would_take']}")
        elif "skipped" in b:
            click.echo(f"No backup: {b['skipped']}.")
        else:
            level = b.get("verify_level") or "not verified"
            click.echo(f"Backup: {b['path']} (verified: {level}, sha256 {str(b.get('sha256'))[:16]}…)")
    if report.migrations and any(m.result == "rolled back" for m in report.migrations):
        click.echo(table(["MIGRATION", "RESULT"], [[m.name, m.result] for m in report.migrations]))
        undone = sum(1 for m in report.migrations if m.result == "rolled back")
        processes = report.wrangler_processes
        click.echo(f"Rolled back {undone} migration(s) on {report.env} ({processes} wrangler processes).")
        return
    if report.bookmark:
        click.echo(f"Time Travel bookmark before the change: {report.bookmark}")
        click.echo(f"  to go back: {report.restore_command}")
    if report.migrations:
        timings = {m.timing for m in report.migrations if m.timing}
        ms = "MS (IN DB)" if timings == {"database"} else "MS (WRANGLER CALL)" if timings == {"process"} else "MS"
        click.echo(
            table(
                ["MIGRATION", "RESULT", ms],
                [[m.name, m.result, m.duration_ms] for m in report.migrations],
            )
        )
        applied = sum(1 for m in report.migrations if m.result == "applied")
        click.echo(f"Applied {applied} migration(s) to {report.env} ({report.wrangler_processes} wrangler processes).")


def _print_version(ctx: click.Context) -> None:
    click.echo(about.version_line(Path.cwd()))
    ctx.exit(0)


# -- commands -----------------------------------------------------------------------------------------------------
@click.group(cls=D1OpsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="D1OPS_CONFIG",
    type=click.Path(dir_okay=False),
    help="environments.yaml to use (default: ./environments.yaml; or set D1OPS_CONFIG).",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx) if value else None,
    help="Show d1ops's version and the wrangler it drives, then exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """d1ops: safe, boring schema changes for Cloudflare D1.

    Exit codes: 0 done; 1 operation failed; 2 usage or config error; 3 pending migrations (status --check).
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@cli.command()
@click.argument("env", required=False)
@dry_run_option
@one_by_one_option
@yes_option
@json_option
@pass_project
def migrate(project: Project, env: str | None, dry_run: bool, one_by_one: bool, yes: bool, as_json: bool) -> None:
    """Apply pending migrations to ENV (default: default_env), in order, through every gate."""
    _want_json(as_json)
    report = migrate_plan.run_migrate(
        project, env, dry_run=dry_run, confirm=confirm_by_typing(yes), one_by_one=one_by_one
    )
    _emit_json(report.to_dict()) if as_json else render_run(report)


@cli.command()
@click.option("--to", "to", help="Environment to promote into (default: the first one behind its predecessor).")
@click.option(
    "--rehearse", "rehearse_first", is_flag=True, help="Rehearse on a scratch copy of the target's data first."
)
@dry_run_option
@one_by_one_option
@yes_option
@json_option
@pass_project
def promote(
    project: Project, to: str | None, rehearse_first: bool, dry_run: bool, one_by_one: bool, yes: bool, as_json: bool
) -> None:
    """Apply to an environment exactly what the environment before it has and it lacks."""
    _want_json(as_json)
    if rehearse_first:
        target = project.config.env(to) if to else migrate_plan.behind_env(project)
        previous = project.config.predecessor(target)
        only = set(read_state(project.wrangler, previous).applied) if previous else None
        rehearsal = rehearse.rehearse(project, target.name, only=only)
        if not as_json:
            _render_rehearsal(rehearsal)
        if not rehearsal.ok:
            if as_json:
                _emit_json({"rehearsal": rehearsal.to_dict(), "exit_code": 1})
            raise GateRefused(f"The rehearsal on a copy of {target.name} failed: nothing was promoted.")
        to = target.name
    report = migrate_plan.run_promote(
        project, to, dry_run=dry_run, confirm=confirm_by_typing(yes), one_by_one=one_by_one
    )
    _emit_json(report.to_dict()) if as_json else render_run(report)


@cli.command("status")
@click.argument("env", required=False)
@click.option("--all", "all_envs", is_flag=True, help="Every environment: a matrix of migrations × environments.")
@click.option("--check", is_flag=True, help="Exit 3 when anything is pending or drifted (for CI gates).")
@json_option
@pass_project
def status_cmd(project: Project, env: str | None, all_envs: bool, check: bool, as_json: bool) -> None:
    """Show applied, pending, skipped and drifted migrations."""
    _want_json(as_json)
    if all_envs and env:
        raise UsageError("Give an environment or --all, not both.")
    envs = list(project.config.environments) if all_envs else [project.config.env(env)]
    report = status.status_of(project, envs)
    if as_json:
        _emit_json(report.to_dict())
    else:
        _render_status(report)
    if check and report.needs_attention:
        if not as_json:
            click.echo("status --check: pending or drifted migrations found.", err=True)
        sys.exit(EXIT_PENDING)


def _render_status(report: status.StatusReport) -> None:
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
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
        click.echo(table(["MIGRATION", "STATUS", "APPLIED_AT", "CHECKSUM"], rows))
    else:
        rows = [
            [m.name]
            + [
                f"{c.status} {c.applied_at[:10]}" if c.status == status.APPLIED and c.applied_at else c.status
                for c in (m.envs[e] for e in report.envs)
            ]
            for m in report.migrations
        ]
        click.echo(table(["MIGRATION", *[e.upper() for e in report.envs]], rows))
    for env in report.envs:
        pending = report.count(status.PENDING, env)
        drifted = report.count(status.DRIFTED, env)
        lock = report.locks.get(env)
        extra = f", {drifted} drifted" if drifted else ""
        extra += f", locked by {lock}" if lock else ""
        click.echo(f"{env}: {report.count(status.APPLIED, env)} applied, {pending} pending{extra}.")


@cli.command()
@click.argument("env")
@click.option("--command", "sql", help="SQL to run.")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="SQL file to run.")
@yes_option
@json_option
@pass_project
def execute(project: Project, env: str, sql: str | None, file: Path | None, yes: bool, as_json: bool) -> None:
    """Run SQL on ENV (protected environments ask for confirmation)."""
    _want_json(as_json)
    if (sql is None) == (file is None):
        raise UsageError("Give exactly one of --command SQL or --file PATH.")
    results, _ = execute_plan.run_execute(project, env, command=sql, file=file, confirm=confirm_by_typing(yes))
    if as_json:
        _emit_json(results)
        return
    for statement in results:
        rows = statement["results"]
        if rows:
            headers = list(rows[0])
            click.echo(table(headers, [[r.get(h) for h in headers] for r in rows]))
    click.echo(f"{len(results)} statement(s) executed on {env}.")


@cli.command()
@click.argument("name")
@pass_project
def new(project: Project, name: str) -> None:
    """Create the next migration file, NNNN_NAME.sql."""
    path = migrations.new_migration(project.config.migrations_dir, name)
    click.echo(f"Created {path.relative_to(project.config.root)}")


@cli.command()
@json_option
@pass_project
def lint(project: Project, as_json: bool) -> None:
    """Check the migrations folder: names, numbering, encoding, SQL remote D1 rejects. Exit 1 on errors."""
    _want_json(as_json)
    found = project.migrations()
    if as_json:
        _emit_json([{"level": f.level, "file": f.file, "message": f.message} for f in found.findings])
    else:
        for f in found.findings:
            click.echo(f"{f.level}: {f.file}: {f.message}")
        click.echo(f"{len(found.files)} migration(s), {len(found.errors)} error(s), {len(found.warnings)} warning(s).")
    if found.errors:
        sys.exit(1)


@cli.command()
@click.argument("env")
@yes_option
@json_option
@pass_project
def unlock(project: Project, env: str, yes: bool, as_json: bool) -> None:
    """Release ENV's lock left by a run that died (shows the holder; protected environments ask first)."""
    _want_json(as_json)
    report = unlock_plan.run_unlock(project, env, confirm=confirm_by_typing(yes))
    if as_json:
        _emit_json(report.to_dict())
        return
    holder, since = report.details.get("holder"), report.details.get("held_since")
    if holder is None:
        click.echo(f"{env} is not locked: nothing to release.")
    else:
        click.echo(f"Released the lock on {env} (held by {holder} since {since}).")


@cli.command()
@click.argument("env")
@click.option("--to", "to", help="Undo the migrations applied after this one (default: only the last one).")
@click.option("--steps", type=int, help="Undo the last N applied migrations.")
@dry_run_option
@yes_option
@json_option
@pass_project
def rollback(
    project: Project, env: str, to: str | None, steps: int | None, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Undo the last applied migrations of ENV with their down files (migrations/down/), newest first,
    all or nothing."""
    _want_json(as_json)
    confirm = confirm_by_typing(yes)
    report = rollback_plan.run_rollback(project, env, to=to, steps=steps, dry_run=dry_run, confirm=confirm)
    if as_json:
        _emit_json(report.to_dict())
        return
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not report.plan:
        click.echo(f"{env}: nothing to roll back.")
    elif dry_run:
        click.echo(f"Rollback plan (dry run) for {env}, newest first:")
        click.echo("".join(f"  {name}\n" for name in report.plan).rstrip("\n"))
    else:
        render_run(report)


@cli.command("rehearse")
@click.argument("env", required=False)
@json_option
@pass_project
def rehearse_cmd(project: Project, env: str | None, as_json: bool) -> None:
    """Apply ENV's pending migrations to a scratch copy of its data, one by one, and report each one's effect.
    ENV itself is only read."""
    _want_json(as_json)
    result = rehearse.rehearse(project, project.config.env(env).name)
    if as_json:
        _emit_json(result.to_dict())
    else:
        _render_rehearsal(result)
    if not result.ok:
        sys.exit(1)


def _render_rehearsal(result: rehearse.Rehearsal) -> None:
    if not result.migrations:
        click.echo(f"{result.env}: nothing pending to rehearse.")
        return
    copied = sum(result.copied_rows.values())
    click.echo(f"Rehearsal on a scratch copy of {result.env} ({copied} rows in {len(result.copied_rows)} tables):")
    rows = []
    for m in result.migrations:
        changed = ", ".join(f"{t} {n:+d}" for t, n in m.rows_changed.items()) or "-"
        made = [f"+{t}" for t in m.tables_created] + [f"-{t}" for t in m.tables_dropped]
        checks = f"{sum(1 for c in m.checks if c['passed'])}/{len(m.checks)}" if m.checks else "-"
        rows.append([m.name, m.result, m.duration_ms, changed + (f" ({' '.join(made)})" if made else ""), checks])
    click.echo(table(["MIGRATION", "RESULT", "MS", "ROWS CHANGED", "CHECKS"], rows))
    for m in result.migrations:
        if m.error:
            click.echo(f"{m.name}: {m.error}" + (f"\n  statement: {m.statement}" if m.statement else ""))
        for c in m.checks:
            if not c["passed"]:
                click.echo(f"{m.name}: check failed: {c['sql']} -> {c.get('error') or c.get('value')}")
    verdict = "every migration applied" if result.ok else "FAILED"
    click.echo(f"{verdict}; {result.env} was not changed ({result.wrangler_processes} wrangler processes).")


# -- backups ------------------------------------------------------------------------------------------------------
@cli.command("backup")
@click.argument("tables", nargs=-1)
@click.option("--env", "env", help="Environment (default: default_env).")
@click.option("--format", "fmt", type=click.Choice(backup.FORMATS), default="sql", show_default=True)
@click.option(
    "--verify",
    "verify",
    type=click.Choice(["quick", "full"]),
    is_flag=False,
    flag_value="quick",
    default="quick",
    show_default=True,
    help="Backups are always verified. quick: checksums + SQLite load + row counts; "
    "full: also a load into a scratch local D1.",
)
@click.option("--label", default=None, help="Label in the folder name (default: the tables, or 'full').")
@json_option
@pass_project
def backup_cmd(
    project: Project,
    tables: tuple[str, ...],
    env: str | None,
    fmt: str,
    verify: str,
    label: str | None,
    as_json: bool,
) -> None:
    """Back up TABLES (default: the whole database) of an environment, and verify the backup."""
    _want_json(as_json)
    environment = project.config.env(env)
    result = backup.take_backup(
        project,
        environment,
        tables=list(tables) or None,
        label=label or ("-".join(tables) if tables else "full"),
        verify=verify,
        fmt=fmt,
    )
    if result is None:
        raise UsageError(f"{environment.name} holds no tables yet: there is nothing to back up.")
    if as_json:
        _emit_json(result.summary())
    else:
        click.echo(f"Backup: {result.path}")
        click.echo(table(["TABLE", "ROWS"], [[t["name"], t["rows"]] for t in result.manifest["tables"]]))
        state = f"verified ({result.verify_level})" if result.verified else f"NOT verified: {result.problem}"
        click.echo(state)
    if not result.verified:
        sys.exit(1)


@cli.command("export")
@click.argument("env")
@click.option("--table", "tables", multiple=True, help="Table to export (repeatable; default: all).")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--format", "fmt", type=click.Choice(backup.FORMATS), default="sql", show_default=True)
@pass_project
def export_cmd(project: Project, env: str, tables: tuple[str, ...], output: Path, fmt: str) -> None:
    """Export tables of ENV to one file (SQL dump, or JSON rows of one table): no manifest, no retention."""
    counts = backup.export_file(project, project.config.env(env), list(tables), output, fmt)
    rows = f" ({', '.join(f'{t}: {n} rows' for t, n in counts.items())})" if counts else ""
    click.echo(f"Wrote {output}{rows}.")


@cli.command()
@click.argument("source", required=False)
@click.option("--env", "env", required=True, help="Environment to restore into.")
@click.option("--bookmark", help="Remote only: restore ENV to this Time Travel bookmark instead of a backup.")
@click.option("--from-other-env", is_flag=True, help="Allow restoring a backup taken from another environment.")
@click.option("--allow-cascade", is_flag=True, help="Go on even if removing rows fires ON DELETE in other tables.")
@dry_run_option
@yes_option
@json_option
@pass_project
def restore(
    project: Project,
    source: str | None,
    env: str,
    bookmark: str | None,
    from_other_env: bool,
    allow_cascade: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Make ENV's tables equal a backup (SOURCE: a backup folder or name), after a fresh verified backup."""
    _want_json(as_json)
    if bookmark:
        if source:
            raise UsageError("Give a backup or --bookmark, not both.")
        result = restore_plan.restore_bookmark(project, env, bookmark, confirm=confirm_by_typing(yes))
    else:
        if not source:
            raise UsageError("Give the backup to restore (see `d1ops backups list`), or --bookmark.")
        result = restore_plan.restore_backup(
            project,
            catalog.resolve_backup(project, source),
            env,
            from_other_env=from_other_env,
            allow_cascade=allow_cascade,
            dry_run=dry_run,
            confirm=confirm_by_typing(yes),
        )
    if as_json:
        _emit_json(result.to_dict())
    else:
        click.echo(restore_plan.describe_restore(result))


@cli.group("backups")
def backups_group() -> None:
    """List, verify and prune backups."""


@backups_group.command("list")
@click.argument("env", required=False)
@json_option
@pass_project
def backups_list(project: Project, env: str | None, as_json: bool) -> None:
    """Backups, newest first."""
    _want_json(as_json)
    if env:
        project.config.env(env)
    entries = catalog.list_backups(project, env)
    if as_json:
        _emit_json([e.to_dict() for e in entries])
        return
    if not entries:
        click.echo("No backups.")
        return
    click.echo(
        table(
            ["ENV", "NAME", "TABLES", "ROWS", "SIZE", "VERIFIED"],
            [[e.env, e.name, ",".join(e.tables)[:40], e.rows, size(e.size), e.verify_level or "no"] for e in entries],
        )
    )


@backups_group.command("prune")
@click.argument("env", required=False)
@click.option("--keep", type=int, required=True, help="How many of the newest backups to keep.")
@dry_run_option
@pass_project
def backups_prune(project: Project, env: str | None, keep: int, dry_run: bool) -> None:
    """Delete old backups of ENV; the newest verified backup is never deleted."""
    name = project.config.env(env).name
    doomed = catalog.prune_backups(project, name, keep, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(f"{verb} {len(doomed)} backup(s) of {name}." + "".join(f"\n  {e.name}" for e in doomed))


@backups_group.command("verify")
@click.argument("source")
@click.option("--full", is_flag=True, help="Also load it into a scratch local D1 through wrangler.")
@pass_project
def backups_verify(project: Project, source: str, full: bool) -> None:
    """Verify an existing backup again (checksums, load, row counts)."""
    result = verify.verify_backup(project, catalog.resolve_backup(project, source), level="full" if full else "quick")
    if not result.verified:
        click.echo(f"{result.path}: NOT verified: {result.problem}")
        sys.exit(1)
    click.echo(f"{result.path}: verified ({result.verify_level}).")


# -- remote databases ---------------------------------------------------------------------------------------------
@cli.command()
@click.argument("env")
@click.option("--write-config", is_flag=True, help="Write the new database_id into the wrangler config.")
@json_option
@pass_project
def create(project: Project, env: str, write_config: bool, as_json: bool) -> None:
    """Create ENV's remote D1 database (named by its database_name in the wrangler config)."""
    _want_json(as_json)
    result = remote.create_database(project, project.config.env(env), write_config=write_config)
    if as_json:
        _emit_json(result)
        return
    click.echo(f"Created D1 database {result['name']} ({result['uuid']}).")
    if result["config_written"]:
        click.echo(f"Wrote database_id into {project.config.wrangler_config.name} for {env}.")
    else:
        click.echo(f"Put it in {project.config.wrangler_config.name}: {result['snippet']}")
        click.echo("(or run again with --write-config)")


@cli.command()
@click.argument("env", required=False)
@json_option
@pass_project
def info(project: Project, env: str | None, as_json: bool) -> None:
    """Show ENV's remote D1 database: id, size, tables."""
    _want_json(as_json)
    data = remote.database_info(project, project.config.env(env))
    if as_json:
        _emit_json(data)
        return
    click.echo(table(["KEY", "VALUE"], [[k, v] for k, v in data.items()]))


@cli.command("list")
@json_option
@pass_project
def list_cmd(project: Project, as_json: bool) -> None:
    """Every D1 database of the account, marking those this project's environments use."""
    _want_json(as_json)
    rows = remote.list_databases(project)
    if as_json:
        _emit_json(rows)
        return
    click.echo(
        table(
            ["NAME", "UUID", "USED BY"],
            [[r.get("name"), r.get("uuid"), ",".join(r["used_by"])] for r in rows],
        )
    )


def _terminated(signum: int, _frame: Any) -> None:
    # A CI job being cancelled sends SIGTERM: unwind like Ctrl-C, so wrangler is stopped and the lock released.
    raise SystemExit(128 + signum)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="d1ops")
