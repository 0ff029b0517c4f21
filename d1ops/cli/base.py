"""The command line: parse, call one core function, render (human text or --json), map errors to exit codes.

The `cli` package is the only place that imports click. This module holds the group, the shared options, the
error handling and the rendering of run reports; the commands live beside it, one module per area.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from d1ops.errors import EXIT_INTERRUPTED, D1OpsError, GateRefused, UsageError

# Only what --help, --version and completion need is imported here; the core is imported inside the commands
# (d1ops --help must start in ≤ 0.10 s over a bare Python: see the start-up row of `make bench`).
from d1ops.project import about
from d1ops.support import progress
from d1ops.support.render import text_table
from d1ops.support.secrets import mask_secrets, redact

if TYPE_CHECKING:
    from d1ops.project.config import Environment
    from d1ops.run import sequence as pipeline


class _NeverRaised(Exception):
    pass


def _run_failed() -> type[pipeline.RunFailed]:
    """pipeline.RunFailed, without importing the pipeline (--help must not): not loaded, no run failed."""
    loaded = sys.modules.get("d1ops.run.sequence")
    return loaded.RunFailed if loaded else cast("type[pipeline.RunFailed]", _NeverRaised)


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


# Commands that act on every database of the project unless --db names one; the others need --db when there are
# several.
EVERY_DATABASE = {"migrate", "promote", "status", "rollback", "backup", "backups list", "backups prune", "lint"}


def _complete_database(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from d1ops.cli.completion import complete_database

    return complete_database(ctx, param, incomplete)


db_option = click.option(
    "--db",
    "database",
    metavar="NAME",
    shell_complete=_complete_database,
    help="The database to act on, when environments.yaml names several (default: all of them for migrate, "
    "promote, status, rollback, backup, backups list/prune, lint).",
)


def _set_quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    progress.configure(quiet=value)


def _set_verbose(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    progress.configure(verbose=value)


def _output_options() -> list[click.Option]:
    """-q/-v, accepted by the group and by every command (`d1ops -v migrate dev` = `d1ops migrate dev -v`)."""
    return [
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_set_quiet,
            help="Print nothing but errors (and --json documents); the exit code tells the rest.",
        ),
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_set_verbose,
            help="Print each wrangler call (token-free) with its duration and exit code, to rerun it by hand.",
        ),
    ]


class D1OpsCommand(click.Command):
    """Every command: -q/-v, and the progress line erased when it ends (whatever way it ends)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_output_options())

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.params.get("as_json"):  # set before the project opens: a config error is JSON too
            want_json(True)
        try:
            return super().invoke(ctx)
        finally:
            progress.finish()


def say(message: str = "", *, err: bool = False) -> None:
    """Human output: nothing with --quiet; the progress line erased first."""
    if progress.settings.quiet:
        return
    progress.clear()
    click.echo(message, err=err)


def warn(message: str) -> None:
    say(style("warning:", "yellow", err=True) + f" {message}", err=True)


def style(text: str, fg: str, *, err: bool = False, bold: bool = False) -> str:
    """Colour only on a terminal and never with NO_COLOR."""
    stream = sys.stderr if err else sys.stdout
    return click.style(text, fg=fg, bold=bold) if progress.colour(stream) else text


def pass_project(func: Callable[..., Any]) -> Callable[..., Any]:
    """Open the project (config + wrangler) from the group's --config and pass it first; adds --db NAME.

    With several databases, commands in EVERY_DATABASE run once per database (stopping at the first error);
    the others refuse without --db."""

    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args: Any, database: str | None = None, **kwargs: Any) -> Any:
        from d1ops.project.project import open_projects

        projects = open_projects(ctx.obj.get("config"), database=database)
        if len(projects) == 1:
            return func(projects[0], *args, **kwargs)
        command = " ".join(ctx.command_path.split()[1:])
        names = ", ".join(p.config.database for p in projects)
        if command not in EVERY_DATABASE:
            raise UsageError(f"This project has several databases ({names}): say which with `--db NAME`.")
        worst = 0
        for project in projects:
            if not kwargs.get("as_json"):
                say(f"== database {project.config.database} ==")
            try:
                func(project, *args, **kwargs)
            except SystemExit as exc:  # status, lint: the verdict after every database was shown
                if not isinstance(exc.code, int):
                    raise
                worst = max(worst, exc.code)
        if worst:
            sys.exit(worst)
        return None

    return db_option(wrapper)


class D1OpsGroup(click.Group):
    """Turns every D1OpsError into its exit code and a message that says what to do next. With --json, every
    failure (config and usage errors included, raised before the command runs) is one JSON document on stdout:
    {"error": ..., "exit_code": ...} (a run's failure: its whole report, which has both)."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or not extra.get("standalone_mode", True):
            return super().main(argv, prog_name, complete_var, **extra)
        extra["standalone_mode"] = False
        try:
            code = super().main(argv, prog_name, complete_var, **extra)  # ctx.exit(N) returns N here
        except click.ClickException as exc:  # usage: bad option, missing argument, no such file…
            _fail_json(exc.format_message(), exc.exit_code)
        except click.exceptions.Abort:
            _fail_json("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:  # a bug: still one JSON document; the traceback goes to stderr
            traceback.print_exc()
            _fail_json(f"internal error: {type(exc).__name__}: {exc}", 1)
        sys.exit(code if isinstance(code, int) else 0)

    command_class = D1OpsCommand
    group_class = type  # `backups` is one too

    def invoke(self, ctx: click.Context) -> Any:
        # --json was given: known before the command runs, so a failure opening the project is JSON too.
        ctx.meta["d1ops.json_arg"] = "--json" in [*ctx._protected_args, *ctx.args]
        try:
            return super().invoke(ctx)
        except _run_failed() as exc:
            if _json_wanted(ctx):
                emit_json(exc.report.to_dict())
            _fail(exc)
        except D1OpsError as exc:
            if _json_wanted(ctx):
                emit_json({"error": redact(exc.message), "exit_code": exc.exit_code})
            _fail(exc)


def _json_wanted(ctx: click.Context) -> bool:
    """--json was given: the command said so, or it failed before it could (opening the project)."""
    return bool(ctx.meta.get("d1ops.json", ctx.meta.get("d1ops.json_arg")))


def _fail_json(message: str, code: int) -> NoReturn:
    emit_json({"error": redact(message), "exit_code": code})
    click.echo(f"Error: {redact(message)}", err=True)
    sys.exit(code)


def _fail(exc: D1OpsError) -> NoReturn:
    progress.finish()
    click.echo(f"{style('Error:', 'red', err=True, bold=True)} {redact(exc.message)}", err=True)
    sys.exit(exc.exit_code)


def emit_json(data: Any) -> None:
    """One JSON document on stdout. Only the secrets d1ops knows are masked: query results are user data."""
    click.echo(mask_secrets(json.dumps(data, indent=2, default=str)))


def want_json(as_json: bool) -> None:
    click.get_current_context().meta["d1ops.json"] = as_json
    progress.configure(json=as_json)


def confirm_by_typing(yes: bool) -> pipeline.Confirm:
    """Protected environments: type the environment's name; --yes (or D1OPS_YES=1) for CI; no TTY refuses."""

    def confirm(env: Environment, description: str) -> None:
        if yes:
            return
        why = f"{env.name} is protected" if env.protected else "This needs confirmation"
        if not sys.stdin.isatty():
            raise GateRefused(
                f"{why} and there is no terminal to confirm on. Review the plan with "
                f"--dry-run, then run again with --yes (or D1OPS_YES=1) to confirm."
            )
        progress.clear()
        click.echo(description, err=True)
        typed = click.prompt(f"{why}. Type {env.name} to continue", err=True, default="")
        if typed.strip() != env.name:
            raise GateRefused(f"Confirmation did not match '{env.name}': nothing was changed.")

    return confirm


# -- rendering ----------------------------------------------------------------------------------------------------
table = text_table


def render_run(report: pipeline.RunReport) -> None:
    for warning in report.warnings:
        warn(warning)
    head = "Plan (dry run)" if report.dry_run else "Plan"
    if not report.plan:
        say(f"{report.env}: nothing to apply; {report.env} is up to date.")
    elif report.dry_run:
        say(f"{head} for {report.env}: {len(report.plan)} migration(s) would be applied:")
        for name in report.plan:
            say(f"  {name}")
    if report.skipped:
        say(f"Skipped on {report.env} (skip list): {', '.join(report.skipped)}")
    if report.backup:
        b = report.backup
        if "would_take" in b:
            need = "required" if b["required"] else "optional"
            say(f"Would take a backup first ({need}, verify {b['verify']}): {b['would_take']}")
        elif "skipped" in b:
            say(f"No backup: {b['skipped']}.")
        else:
            level = b.get("verify_level") or "not verified"
            say(f"Backup: {b['path']} (verified: {level}, sha256 {str(b.get('sha256'))[:16]}…)")
    if report.migrations and any(m.result == "rolled back" for m in report.migrations):
        say(table(["MIGRATION", "RESULT"], [[m.name, m.result] for m in report.migrations]))
        undone = sum(1 for m in report.migrations if m.result == "rolled back")
        processes = report.wrangler_processes
        say(f"Rolled back {undone} migration(s) on {report.env} ({processes} wrangler processes).")
        return
    if report.bookmark:
        say(f"Time Travel bookmark before the change: {report.bookmark}")
        say(f"  to go back: {report.restore_command}")
    if report.migrations:
        timings = {m.timing for m in report.migrations if m.timing}
        ms = "MS (IN DB)" if timings == {"database"} else "MS (WRANGLER CALL)" if timings == {"process"} else "MS"
        if any(m.duration_ms is not None for m in report.migrations):
            say(table(["MIGRATION", "RESULT", ms], [[m.name, m.result, m.duration_ms] for m in report.migrations]))
        else:  # remote: one import for the whole batch, and D1 reports no time per migration
            say(table(["MIGRATION", "RESULT"], [[m.name, m.result] for m in report.migrations]))
            if report.target == "remote":
                say("(One import for all of them: D1 reports no time per migration.)")
        applied = sum(1 for m in report.migrations if m.result == "applied")
        say(f"Applied {applied} migration(s) to {report.env} ({report.wrangler_processes} wrangler processes).")


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
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and --json documents).")
@click.option("-v", "--verbose", is_flag=True, help="Print each wrangler call with its duration and exit code.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, quiet: bool, verbose: bool) -> None:
    """d1ops: safe, boring schema changes for Cloudflare D1.

    Exit codes: 0 done; 1 operation failed; 2 usage or config error; 3 pending migrations (status --check);
    130 interrupted (Ctrl-C).
    Shell completion: `d1ops completion bash|zsh|fish`.

    \b
    Example:
      d1ops status --all && d1ops migrate dev && d1ops promote --to staging
    """
    progress.reset()
    progress.configure(quiet=quiet, verbose=verbose)
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


def _terminated(signum: int, _frame: Any) -> None:
    # A CI job being cancelled sends SIGTERM: unwind like Ctrl-C, so wrangler is stopped and the lock released.
    raise SystemExit(128 + signum)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, _terminated)
    # Ctrl-C unwinds (wrangler stopped, lock released, report filed) even when d1ops was started with SIGINT
    # ignored, as a non-interactive shell starts background jobs (`d1ops migrate … &` in a script or CI step).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cli(prog_name="d1ops")
