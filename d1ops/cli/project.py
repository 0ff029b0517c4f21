"""Commands that bring d1ops into a project and check it: init, adopt, doctor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from d1ops.cli.base import (
    cli,
    confirm_by_typing,
    dry_run_option,
    emit_json,
    json_option,
    pass_project,
    say,
    table,
    want_json,
    warn,
    yes_option,
)
from d1ops.cli.completion import complete_env, complete_migration
from d1ops.errors import EXIT_FAILED

if TYPE_CHECKING:
    from d1ops.project.project import Project

# The core is imported inside each command: `d1ops --help` must not load it (see cli/base.py).


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing environments.yaml.")
@click.option(
    "--top-level",
    type=click.Choice(["dev", "production"]),
    help="What the wrangler config's top-level database is (default: dev, run locally).",
)
@click.pass_context
def init(ctx: click.Context, force: bool, top_level: str | None) -> None:
    """Write environments.yaml from this Workers project's wrangler config (wrangler.json, .jsonc or .toml).

    \b
    Example (in an existing Workers project):
      d1ops init && d1ops doctor
    """
    from d1ops.project import init as init_mod

    config = ctx.obj.get("config")
    root = Path(config).resolve().parent if config else Path.cwd()
    looks = init_mod.top_level_looks_like_production(root) if top_level is None and sys.stdin.isatty() else None
    if looks:
        asked = click.confirm(f"The top-level database {looks} looks like production. Is it?", default=True, err=True)
        top_level = "production" if asked else "dev"
    result = init_mod.init_project(root, force=force, top_level=top_level)
    say(f"Wrote {result.path.name} from {result.wrangler_config.name}:")
    say(result.text.rstrip("\n"))
    if result.gitignore:
        say(f"Also {result.gitignore}.")
    say("Check:" if result.notes else "Nothing flagged.")
    for note in result.notes:
        say(f"  - {note}")
    say("Next: `d1ops doctor`, then `d1ops adopt ENV --through NAME` for history applied before d1ops.")


@cli.command()
@click.argument("env", shell_complete=complete_env)
@click.option(
    "--through",
    required=True,
    metavar="NAME",
    shell_complete=complete_migration,
    help="The newest migration already applied in ENV.",
)
@click.option(
    "--schema-from",
    "schema_from",
    metavar="ENV",
    shell_complete=complete_env,
    help="Build ENV's schema from another environment's first (for an empty local database whose history "
    "cannot be replayed).",
)
@dry_run_option
@yes_option
@json_option
@pass_project
def adopt(
    project: Project, env: str, through: str, schema_from: str | None, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Record the migrations up to NAME as applied in ENV without running them (in wrangler's d1_migrations too,
    so `wrangler d1 migrations list` agrees).

    \b
    Example (production already has everything through 0008):
      d1ops adopt production --through 0008_add_tags.sql --dry-run
    """
    want_json(as_json)
    from d1ops.changes import adopt as adopt_plan

    report = adopt_plan.run_adopt(
        project, env, through=through, schema_from=schema_from, dry_run=dry_run, confirm=confirm_by_typing(yes)
    )
    if as_json:
        emit_json(report.to_dict())
        return
    for warning in report.warnings:
        warn(warning)
    details = report.details
    if details.get("already_applied"):
        say(f"Already recorded in {report.env}: {len(details['already_applied'])} migration(s).")
    if report.skipped:
        say(f"Skipped on {report.env} (skip list): {', '.join(report.skipped)}")
    if not report.plan:
        say(f"{report.env}: nothing to adopt; every migration through {through} is recorded.")
        return
    verb = "Would record" if dry_run else "Recorded"
    if details.get("schema_from"):
        done = "would be created" if dry_run else "created"
        say(f"Schema of {details['schema_from']} {done} first ({details['schema_statements']} statements).")
    say(f"{verb} {len(report.plan)} migration(s) as applied in {report.env}, without running them:")
    say("".join(f"  {name}\n" for name in report.plan).rstrip("\n"))
    if not dry_run:
        say(f"({report.wrangler_processes} wrangler processes; report {report.report_path})")


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check wrangler, Node, the config, bindings, migrations, backups dir, credentials, local state and locks.
    Exit 1 on any fail.

    \b
    Example:
      d1ops doctor --json
    """
    want_json(as_json)
    from d1ops.project import doctor as doctor_mod

    report = doctor_mod.run_doctor(ctx.obj.get("config"))
    if as_json:
        emit_json(report.to_dict())
    else:
        rows = [
            [c.level.upper(), c.name, c.detail + (f"  → {c.fix}" if c.fix and c.level != "ok" else "")]
            for c in report.checks
        ]
        say(table(["", "CHECK", "DETAIL"], rows))
        fails = sum(1 for c in report.checks if c.level == "fail")
        warns = sum(1 for c in report.checks if c.level == "warn")
        say(f"{fails} fail, {warns} warn ({report.wrangler_processes} wrangler processes).")
    if report.failed:
        sys.exit(EXIT_FAILED)
