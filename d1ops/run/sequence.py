"""The run: the only path that changes a database.

Every command that writes (migrate, promote, rollback, restore, execute, unlock, adopt) is a `Change`: it feeds
the run a plan and an apply step, and the run always goes through the same sequence:

    load → lock + read state (one wrangler call) → validate → plan → gate → confirm (protected env)
    → safety backup / Time Travel bookmark (per policy) → apply (the lock released in the same call)
    → read back where the outcome is unknown → report

A failure at any step releases the lock, files the report and raises RunFailed carrying it. So does an
interruption (Ctrl-C, SIGTERM): the report says what was read back, never what was merely hoped.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from d1ops.backups.take import Export
from d1ops.backups.verify import BackupResult
from d1ops.errors import (
    D1OpsError,
    GateRefused,
    Interrupted,
    LockHeld,
    OutcomeUnknown,
    UsageError,
    WranglerError,
    WranglerNotFound,
    unexpected_stop,
    where_raised,
)
from d1ops.project.config import Environment
from d1ops.project.project import Project
from d1ops.run.lease import lock_and_read_state, new_lock_owner, release_lock
from d1ops.run.report import RunReport, finish
from d1ops.run.safety import take_safety
from d1ops.run.tracking import EnvState, read_state
from d1ops.sql.rowguard import row_guard_warning
from d1ops.sql.schema import DatabaseSchema
from d1ops.support import progress
from d1ops.support.files import utc_now
from d1ops.wrangler.runner import redact

Confirm = Callable[[Environment, str], None]
"""Called before a protected environment is changed, with a description of the change; raises to refuse."""


class RunFailed(D1OpsError):
    """A run failed; carries the report so the CLI can still print and file it."""

    def __init__(self, cause: D1OpsError, report: RunReport) -> None:
        super().__init__(cause.message)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.report = report


class Run:
    """The state one run shares between its steps (and with the Change it runs)."""

    def __init__(self, project: Project, env: Environment, report: RunReport, *, dry_run: bool) -> None:
        self.project = project
        self.env = env
        self.report = report
        self.dry_run = dry_run
        self.owner = new_lock_owner()
        self.locked = False
        self.state: EnvState | None = None
        self.schema: DatabaseSchema | None = None
        self.safety_backup: BackupResult | None = None
        self.work = Path()

    @property
    def wrangler(self):  # noqa: ANN201 - Wrangler, without importing it here
        return self.project.wrangler

    def lock_and_read(self, *, with_schema: bool = False) -> EnvState:
        """Take the lock and read the state (and the schema) in one wrangler call; a dry run only reads."""
        env = self.env
        if self.dry_run:
            self.state = read_state(self.wrangler, env)
            return self.state
        self.locked = True  # set first: a failure after the lock call must still release it
        files = self.project.migrations().files if self.project.config.migrations_dir.is_dir() else ()
        try:
            self.state, schema = lock_and_read_state(self.wrangler, env, self.owner, files, with_schema=with_schema)
        except LockHeld:
            self.locked = False  # the call answered: another run holds the lease, there is nothing of ours to release
            raise
        except (WranglerError, WranglerNotFound) as exc:  # refused as a whole (one atomic batch), or never started:
            if not isinstance(exc, OutcomeUnknown) and getattr(exc, "wrangler_exit_code", None) != 0:
                self.locked = False  # no lock was taken
            raise
        self.schema = schema or self.schema
        if self.state.taken_over:
            self.report.warnings.append(
                f"took over the expired lease on {env.name} of {self.state.taken_over}: that run is presumed dead. "
                f"Its report (if it wrote one) is in the reports folder; what it applied is read above."
            )
        return self.state

    def applied(self) -> None:
        """The apply step's call released the lock along with the change."""
        self.locked = False

    def release(self) -> None:
        if self.locked:
            release_lock(self.wrangler, self.env, self.owner)
            self.locked = False

    def release_quietly(self) -> str:
        """Release our lock after a failure; if even that fails (a second Ctrl-C included), return and file the
        advice to release it by hand. Never raises."""
        if not self.locked:
            return ""
        try:
            release_lock(self.wrangler, self.env, self.owner)
            self.locked = False
            return ""
        except BaseException as exc:  # noqa: BLE001 - a second Ctrl-C here must still leave the advice
            detail = exc.message if isinstance(exc, D1OpsError) else "interrupted"
            name = self.env.name
            advice = f"The lock on {name} could not be released ({detail}). Run `d1ops unlock {name}`."
            self.report.warnings.append(advice)
            return advice


class Change:
    """What one command feeds the run. Override what differs; every step has a safe default."""

    command = "change"
    backup_label: str | None = None  # the safety backup's label (default: the command)

    def __init__(self, env: Environment) -> None:
        self.env = env

    def prepare(self, run: Run) -> None:
        """Check inputs before anything touches the database (a refusal here changes nothing)."""

    def read(self, run: Run) -> None:
        """Lock and read state: one wrangler call."""
        run.lock_and_read()

    def plan(self, run: Run) -> bool:
        """Validate, plan, gate. Return False when there is nothing to do."""
        return True

    def describe(self) -> str:
        """What the confirmation prompt shows."""
        return f"{self.command} on {self.env.name}"

    def backup_policy(self) -> str:
        """required | optional | skip: the environment's policy, unless the command has its own."""
        return self.env.backup

    def backup_tables(self) -> list[str] | None:
        """The tables the safety backup holds (None: the whole database)."""
        return None

    def backup_export(self) -> Export | None:
        """An export of exactly `backup_tables()` the plan made already (it read the live rows with it): the
        safety backup takes it as its dump, so the rows backed up are the rows planned against (no process)."""
        return None

    def wants_bookmark(self) -> bool:
        return self.env.is_remote

    def untouched(self) -> str:
        return f"Nothing was applied to {self.env.name}."

    def on_dry_run(self, run: Run) -> None:
        """Fill the report of a dry run (what would happen)."""

    def apply(self, run: Run) -> None:
        """Make the change; release the lock in the same call (`run.applied()`), or leave it to the run."""
        raise NotImplementedError

    def read_back(self, run: Run, cause: OutcomeUnknown) -> D1OpsError:
        """After a call whose outcome is unknown: read what the database holds, put it in the report, and
        return the error to raise (saying exactly what is applied). By default: say that it is unknown."""
        name = self.env.name
        return D1OpsError(
            f"The {self.command} call on {name} did not finish ({cause.detail}): whether it changed {name} is "
            f"unknown, and it was not retried. Check the database (`d1ops execute {name} --command ...`, "
            f"`d1ops status {name}`); `d1ops unlock {name}` if the lock is still held."
        )


def run_change(project: Project, change: Change, *, dry_run: bool = False, confirm: Confirm | None = None) -> RunReport:
    """Run one change through the whole sequence; returns the report, or raises RunFailed carrying it."""
    env = change.env
    if env.is_fleet:  # many databases, reached through the API: only `migrate` (run/fleet.py) runs on them
        raise UsageError(
            f"{env.name} is a fleet (many databases): `{change.command}` works on one database through wrangler. "
            f"Migrate a fleet with `d1ops migrate {env.name}`; for one of its databases, add an environment for it."
        )
    report = RunReport(command=change.command, env=env.name, target=env.target, dry_run=dry_run, started_at=utc_now())
    run = Run(project, env, report, dry_run=dry_run)
    start = project.wrangler.processes
    applying = applied = False
    try:
        with tempfile.TemporaryDirectory(prefix="d1ops-run-") as tmp:
            run.work = Path(tmp)
            change.prepare(run)
            off = row_guard_warning(env)
            if off:
                report.warnings.append(off)
            progress.step(f"Reading {env.name}")
            change.read(run)
            pause_point("locked")
            if not change.plan(run) or dry_run:
                run.release()
                if dry_run:
                    change.on_dry_run(run)
                return finish(project, report, start)
            if env.protected:
                if confirm is None:
                    raise GateRefused(f"{env.name} is protected and no confirmation was given. Use --yes in CI.")
                confirm(env, change.describe())
            progress.step(f"Safety backup of {env.name}")
            take_safety(run, change)
            progress.step(f"{change.command.capitalize()} on {env.name}")
            pause_point("before-apply")
            applying = True
            try:
                change.apply(run)
            except OutcomeUnknown as unknown:
                run.locked = False  # whatever the call did, it was the one to release the lock: never retried
                raise change.read_back(run, unknown) from None
            applying, applied = False, True
            run.release()
            pause_point("before-report")
            return finish(project, report, start)
    except D1OpsError as exc:
        advice = run.release_quietly()
        raise failed(project, report, start, exc, advice) from exc
    except BaseException as exc:  # Ctrl-C, SIGTERM, or a bug: read back what the apply did, release, file it
        raise interrupted(project, change, run, start, exc, applying=applying, applied=applied) from exc


def interrupted(
    project: Project, change: Change, run: Run, start: int, exc: BaseException, *, applying: bool, applied: bool
) -> RunFailed:
    """An interruption: wrangler was already stopped (wrangler.py kills its process group). During the apply,
    the state is read back so the report says exactly what is applied; a second Ctrl-C skips the read-back
    (outcomes stay "unknown") but never the report, nor the advice to unlock."""
    report, env = run.report, run.env
    code, stopped, kind = unexpected_stop(exc)
    error: D1OpsError = kind(f"{stopped} before {change.command} on {env.name} changed anything. {change.untouched()}")
    if applied:
        error = kind(f"{stopped} after {change.command} on {env.name} was applied: the report shows what was done.")
    elif applying:
        run.locked = False  # the apply call releases the lock itself, if it ran at all: see the read-back
        detail = f"{stopped} and stopped wrangler" if kind is Interrupted else stopped
        cause = OutcomeUnknown(["wrangler"], None, detail)
        try:
            error = change.read_back(run, cause)
        except BaseException:  # noqa: BLE001 - a second Ctrl-C: say that the outcome is unknown
            for outcome in report.migrations:
                if outcome.result == "not run":
                    outcome.result = "unknown"
            error = Interrupted(
                f"d1ops was interrupted twice while applying {change.command} to {env.name}: whether it was applied "
                f"is unknown (nothing is retried). Run `d1ops status {env.name}` to see what is applied, and "
                f"`d1ops unlock {env.name}` if the lock is still held."
            )
    error.exit_code = code
    if kind is not Interrupted:
        error.message += f"\nThis is a bug in d1ops: please report it with the run report ({where_raised(exc)})."
    advice = run.release_quietly()
    what = "was interrupted" if kind is Interrupted else "stopped on an internal error (a bug in d1ops)"
    report.warnings.append(f"the run {what}; the report shows what was read back when it stopped")
    return failed(project, report, start, error, advice)


def failed(project: Project, report: RunReport, start: int, exc: D1OpsError, advice: str) -> RunFailed:
    """File the report of a failed run and return the RunFailed to raise (the message ends with `advice`)."""
    if advice and advice not in exc.message:
        exc.message = f"{exc.message}\n{advice}"
    report.error = redact(exc.message)
    report.exit_code = exc.exit_code
    try:
        finish(project, report, start)
    except BaseException:  # noqa: BLE001 - a Ctrl-C while filing: the message still reaches the user
        report.warnings.append("interrupted while writing the run report")
    return RunFailed(exc, report)


PAUSE_ENV_VAR = "D1OPS_PAUSE_AT"


def pause_point(step: str) -> None:
    """Test seam for the kill matrix: with D1OPS_PAUSE_AT=<step>:<file>, write <file> and wait (up to 10 min)
    to be killed. Steps: locked, before-apply, before-report. Does nothing otherwise."""
    wanted = os.environ.get(PAUSE_ENV_VAR, "")
    if not wanted.startswith(step + ":"):
        return
    Path(wanted.split(":", 1)[1]).write_text(str(os.getpid()), encoding="utf-8")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)
