"""Commands that act on a database's data: execute, unlock, backup, export, restore, backups, create, info, list."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from d1ops.backups.layout import DEFAULT_FORMAT, FORMATS, VERIFY_LEVELS
from d1ops.cli.base import (
    cli,
    confirm_by_typing,
    dry_run_option,
    emit_json,
    json_option,
    pass_project,
    say,
    style,
    table,
    want_json,
    yes_option,
)
from d1ops.cli.completion import complete_backup, complete_env
from d1ops.errors import EXIT_FAILED, UsageError
from d1ops.support import progress
from d1ops.support.render import size

if TYPE_CHECKING:
    from d1ops.project.project import Project

# The core is imported inside each command: `d1ops --help` must not load it (see cli/base.py).


@cli.command()
@click.argument("env", shell_complete=complete_env)
@click.option("--command", "sql", help="SQL to run.")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="SQL file to run.")
@yes_option
@json_option
@pass_project
def execute(project: Project, env: str, sql: str | None, file: Path | None, yes: bool, as_json: bool) -> None:
    """Run SQL on ENV. Read-only SQL (as SQLite decides against the migrations' schema) runs at once; SQL that
    can write goes through the run (lock, backup per policy, report) and protected environments ask first.

    \b
    Example:
      d1ops execute production --command "SELECT count(*) FROM users"
    """
    from d1ops.changes import execute as execute_plan

    want_json(as_json)
    if (sql is None) == (file is None):
        raise UsageError("Give exactly one of --command SQL or --file PATH.")
    results, _ = execute_plan.run_execute(project, env, command=sql, file=file, confirm=confirm_by_typing(yes))
    if as_json:
        emit_json(results)
        return
    for statement in results:
        rows = statement["results"]
        if rows:
            headers = list(rows[0])
            say(table(headers, [[r.get(h) for h in headers] for r in rows]))
    say(f"{len(results)} statement(s) executed on {env}.")


@cli.command()
@click.argument("env", shell_complete=complete_env)
@yes_option
@json_option
@pass_project
def unlock(project: Project, env: str, yes: bool, as_json: bool) -> None:
    """Release ENV's lock left by a run that died (shows the holder; protected environments ask first).

    \b
    Example:
      d1ops unlock staging
    """
    from d1ops.changes import unlock as unlock_plan

    want_json(as_json)
    report = unlock_plan.run_unlock(project, env, confirm=confirm_by_typing(yes))
    if as_json:
        emit_json(report.to_dict())
        return
    holder, since = report.details.get("holder"), report.details.get("held_since")
    if holder is None:
        say(f"{env} is not locked: nothing to release.")
    else:
        age = report.details.get("held_for")
        live = " Its lease was still live." if report.details.get("lease_live") else ""
        say(f"Released the lock on {env} (held by {holder} since {since}{f', {age} ago' if age else ''}).{live}")


# -- backups ------------------------------------------------------------------------------------------------------
@cli.command("backup")
@click.argument("tables", nargs=-1)
@click.option("--env", "env", shell_complete=complete_env, help="Environment (default: default_env).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=DEFAULT_FORMAT, show_default=True)
@click.option(
    "--verify",
    "verify",
    type=click.Choice(VERIFY_LEVELS),
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
    """Back up TABLES (default: the whole database) of an environment, and verify the backup.

    \b
    Example:
      d1ops backup --env production users orders --verify full
    """
    from d1ops.backups import take as backup

    want_json(as_json)
    envs = [t for t in tables if t in project.config.env_names] if env is None else []
    if envs:  # `d1ops backup dev`: the environment is given with --env (with --env, a table may be named so)
        raise UsageError(
            f"'{envs[0]}' is an environment, not a table: did you mean --env {envs[0]}? "
            f"(`d1ops backup --env {envs[0]}`; a table named {envs[0]}: `d1ops backup --env ENV {envs[0]}`)"
        )
    progress.step(f"Backing up {project.config.env(env).name}")
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
        emit_json({**result.summary(), "wrangler_processes": project.wrangler.processes})
    else:
        say(f"Backup: {result.path}")
        say(table(["TABLE", "ROWS"], [[t["name"], t["rows"]] for t in result.manifest["tables"]]))
        state = (
            f"verified ({result.verify_level})" if result.verified else style(f"NOT verified: {result.problem}", "red")
        )
        say(state)
    if not result.verified:
        sys.exit(EXIT_FAILED)


@cli.command("export")
@click.argument("env", shell_complete=complete_env)
@click.option("--table", "tables", multiple=True, help="Table to export (repeatable; default: all).")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=DEFAULT_FORMAT, show_default=True)
@pass_project
def export_cmd(project: Project, env: str, tables: tuple[str, ...], output: Path, fmt: str) -> None:
    """Export tables of ENV to one file (SQL dump, or JSON rows of one table): no manifest, no retention.

    \b
    Example:
      d1ops export production --table users --format json --output users.json
    """
    from d1ops.backups import take as backup

    progress.step(f"Exporting {env}")
    counts = backup.export_file(project, project.config.env(env), list(tables), output, fmt)
    rows = f" ({', '.join(f'{t}: {n} rows' for t, n in counts.items())})" if counts else ""
    say(f"Wrote {output}{rows}.")


@cli.command()
@click.argument("source", required=False, shell_complete=complete_backup)
@click.option("--env", "env", required=True, shell_complete=complete_env, help="Environment to restore into.")
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
    """Make ENV's tables equal a backup (SOURCE: a backup folder or name), after a fresh verified backup.

    \b
    Example:
      d1ops restore 20261125T101500Z-full --env production --dry-run
    """
    from d1ops.backups import catalog
    from d1ops.changes import restore as restore_plan

    want_json(as_json)
    progress.step(f"Restoring {env}")
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
        emit_json(result.to_dict())
    else:
        say(restore_plan.describe_restore(result))


@cli.group("backups")
def backups_group() -> None:
    """List, verify and prune backups.

    \b
    Example:
      d1ops backups list production
    """


@backups_group.command("list")
@click.argument("env", required=False, shell_complete=complete_env)
@json_option
@pass_project
def backups_list(project: Project, env: str | None, as_json: bool) -> None:
    """Backups, newest first.

    \b
    Example:
      d1ops backups list production --json
    """
    from d1ops.backups import catalog

    want_json(as_json)
    if env:
        project.config.env(env)
    entries = catalog.list_backups(project, env)
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    if not entries:
        say("No backups.")
        return
    say(
        table(
            ["ENV", "DATABASE", "NAME", "TABLES", "ROWS", "SIZE", "VERIFIED"],
            [
                [e.env, e.database, e.name, ",".join(e.tables)[:40], e.rows, size(e.size), e.verify_level or "no"]
                for e in entries
            ],
        )
    )


@backups_group.command("prune")
@click.argument("env", required=False, shell_complete=complete_env)
@click.option("--keep", type=int, required=True, help="How many of the newest backups to keep.")
@dry_run_option
@pass_project
def backups_prune(project: Project, env: str | None, keep: int, dry_run: bool) -> None:
    """Delete old backups of ENV; the newest verified backup is never deleted.

    \b
    Example:
      d1ops backups prune production --keep 10 --dry-run
    """
    from d1ops.backups import catalog

    name = project.config.env(env).name
    doomed = catalog.prune_backups(project, name, keep, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    listed = "".join(f"\n  {e.name}" for e in doomed)
    say(f"{verb} {len(doomed)} backup(s) of {project.config.database} in {name}.{listed}")


@backups_group.command("verify")
@click.argument("source", shell_complete=complete_backup)
@click.option("--full", is_flag=True, help="Also load it into a scratch local D1 through wrangler.")
@pass_project
def backups_verify(project: Project, source: str, full: bool) -> None:
    """Verify an existing backup again (checksums, load, row counts).

    \b
    Example:
      d1ops backups verify 20261125T101500Z-full --full
    """
    from d1ops.backups import catalog, verify

    progress.step(f"Verifying {source}")
    result = verify.verify_backup(project, catalog.resolve_backup(project, source), level="full" if full else "quick")
    if not result.verified:
        say(f"{result.path}: NOT verified: {result.problem}")
        sys.exit(EXIT_FAILED)
    say(f"{result.path}: verified ({result.verify_level}).")


# -- remote databases ---------------------------------------------------------------------------------------------
@cli.command()
@click.argument("env", shell_complete=complete_env)
@click.option("--write-config", is_flag=True, help="Write the new database_id into the wrangler config.")
@json_option
@pass_project
def create(project: Project, env: str, write_config: bool, as_json: bool) -> None:
    """Create ENV's remote D1 database (named by its database_name in the wrangler config).

    \b
    Example:
      d1ops create staging --write-config
    """
    from d1ops.project import databases as remote

    want_json(as_json)
    result = remote.create_database(project, project.config.env(env), write_config=write_config)
    if as_json:
        emit_json(result)
        return
    say(f"Created D1 database {result['name']} ({result['uuid']}).")
    if result["config_written"]:
        say(f"Wrote database_id into {project.config.wrangler_config.name} for {env}.")
    else:
        say(f"Put it in {project.config.wrangler_config.name}: {result['snippet']}")
        say("(or run again with --write-config)")


@cli.command()
@click.argument("env", required=False, shell_complete=complete_env)
@json_option
@pass_project
def info(project: Project, env: str | None, as_json: bool) -> None:
    """Show ENV's remote D1 database: id, size, tables.

    \b
    Example:
      d1ops info production
    """
    from d1ops.project import databases as remote

    want_json(as_json)
    data = remote.database_info(project, project.config.env(env))
    if as_json:
        emit_json(data)
        return
    say(table(["KEY", "VALUE"], [[k, v] for k, v in data.items()]))


@cli.command("list")
@json_option
@pass_project
def list_cmd(project: Project, as_json: bool) -> None:
    """Every D1 database of the account, marking those this project's environments use.

    \b
    Example:
      d1ops list --json
    """
    from d1ops.project import databases as remote

    want_json(as_json)
    rows = remote.list_databases(project)
    if as_json:
        emit_json(rows)
        return
    say(
        table(
            ["NAME", "UUID", "USED BY"],
            [[r.get("name"), r.get("uuid"), ",".join(r["used_by"])] for r in rows],
        )
    )
