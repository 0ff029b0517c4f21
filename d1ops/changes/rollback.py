"""rollback: undo the last applied migrations of an environment with their down files.

The down files (`migrations/down/NNNN_name.sql`) of the migrations applied after `--to NAME` (default: the
last one; or the last `--steps N`) run newest first, each followed by the removal of its two tracking rows,
as one atomic batch that also releases the lock: all of them are undone, or nothing is.

Rollbacks go in reverse promotion order: a migration that a later environment still has is not rolled back
here until it is rolled back there. A migration without a down file, or whose down file starts with
`-- d1ops: irreversible <reason>`, stops the rollback before anything runs, with the command that restores the
backup (or Time Travel bookmark) taken just before that migration was applied.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from d1ops.backups.catalog import safety_before
from d1ops.errors import GateRefused, MigrationFailed, OutcomeUnknown, UsageError, WranglerError
from d1ops.project.config import Environment
from d1ops.project.credentials import NO_CREDENTIALS, credentials_source
from d1ops.project.migrations import DOWN_DIR, IRREVERSIBLE
from d1ops.project.project import Project
from d1ops.run.apply import Batch, read_back_state, send_batch
from d1ops.run.replay import Step, explain_failure
from d1ops.run.report import MigrationOutcome, RunReport, elapsed_ms
from d1ops.run.sequence import Change, Confirm, Run, run_change
from d1ops.run.tracking import read_states, rolled_back_rows
from d1ops.sql.text import UnfinishedStatement, split_statements, sql_for_batch


@dataclass(frozen=True)
class Undo:
    name: str  # the migration
    down: str  # its down file's SQL
    checksum: str | None


def read_down(path: Path) -> tuple[str | None, str | None]:
    """A down file's SQL, or (None, why it cannot undo its migration)."""
    shown = f"{DOWN_DIR}/{path.name}"
    if not path.is_file():
        return None, f"it has no down file ({shown})"
    try:
        text = path.read_text(encoding="utf-8")
        statements = split_statements(text)
    except UnicodeDecodeError as exc:
        return None, f"its down file {shown} is not UTF-8 (byte {exc.start}); re-save it"
    except UnfinishedStatement as exc:
        return None, f"its down file {shown} is unfinished: {exc.message}; close it"
    first = text.lstrip().splitlines()[:1]
    if first and first[0].startswith(IRREVERSIBLE):
        return (
            None,
            f"its down file says it is irreversible: {first[0][len(IRREVERSIBLE) :].strip() or 'no reason given'}",
        )
    if not statements:
        return None, f"its down file holds no SQL statement ({shown})"
    return text, None


def unchecked_warning(env: Environment, unchecked: list[str], names: list[str], to: str) -> str:
    """What the reverse-order gate of a local rollback could not read (remote, no credentials), and what then."""
    shown = ", ".join(unchecked)
    return (
        f"the reverse-order gate did not check {shown}: remote, and this machine has {NO_CREDENTIALS}. "
        f"{env.name} is local, so the rollback went on; if {shown} still "
        f"{'has' if len(unchecked) == 1 else 'have'} {', '.join(names)}, roll back there first (with "
        f"credentials: `d1ops rollback {unchecked[-1]} --to {to}`)."
    )


def rollback_batch(undo: Undo) -> str:
    """One migration's undo: its down file, then its two tracking rows removed."""
    return sql_for_batch(undo.down) + rolled_back_rows(undo.name)


class RollbackChange(Change):
    command = "rollback"

    def __init__(self, project: Project, env: Environment, *, to: str | None, steps: int | None) -> None:
        super().__init__(env)
        self.project, self.to, self.steps = project, to, steps
        self.undos: list[Undo] = []
        self.accept_drift = False

    def prepare(self, run: Run) -> None:
        if self.to is not None and self.steps is not None:
            raise UsageError("Give --to NAME or --steps N, not both.")
        if self.steps is not None and self.steps < 1:
            raise UsageError("--steps must be at least 1.")

    def read(self, run: Run) -> None:
        """This environment under its lock (with its schema, for a replay), and the ones after it, at once."""
        config = self.project.config
        later = list(config.environments[config.env_names.index(self.env.name) :])
        # Local, without credentials: the remote ones after it cannot be read; plan() warns what was not checked.
        unreadable = not self.env.is_remote and not credentials_source()
        self.unchecked = [e.name for e in later[1:] if e.is_remote and unreadable]
        later = [e for e in later if e.name not in self.unchecked]
        locked = {self.env.name: lambda: run.lock_and_read(with_schema=True)}
        self.states = read_states(run.wrangler, later, readers=locked)

    def plan(self, run: Run) -> bool:
        from d1ops.changes.migrate import refuse_schema_drift

        state = self.states[self.env.name]
        refuse_schema_drift(run, self.project.migrations(), state, accept=self.accept_drift, command="rollback")
        applied = state.applied_names
        names = self._targets(applied)
        run.report.plan = list(reversed(names))
        if not names:
            return False
        for env_name, state in self.states.items():
            still = [n for n in names if n in state.applied] if env_name != self.env.name else []
            if still:
                raise GateRefused(
                    f"Rollbacks go in reverse promotion order ({' → '.join(reversed(self.project.config.env_names))}): "
                    f"{env_name} still has {', '.join(still)}. Roll it back there first: "
                    f"`d1ops rollback {env_name} --to {self._to_name(applied, names)}`."
                )
        self.undos = [self._undo(run, name) for name in reversed(names)]
        if self.unchecked:
            run.report.warnings.append(
                unchecked_warning(self.env, self.unchecked, names, self._to_name(applied, names))
            )
        return True

    def _targets(self, applied: list[str]) -> list[str]:
        if self.to is None:
            return applied[-(self.steps or 1) :]
        if self.to not in applied:
            close = difflib.get_close_matches(self.to, applied, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(
                f"--to {self.to}: not a migration applied to {self.env.name}{hint}. Applied: "
                f"{', '.join(applied) or '(none)'}."
            )
        return applied[applied.index(self.to) + 1 :]

    @staticmethod
    def _to_name(applied: list[str], names: list[str]) -> str:
        before = applied.index(names[0]) - 1
        return applied[before] if before >= 0 else "<first>"

    def _undo(self, run: Run, name: str) -> Undo:
        text, problem = read_down(self.project.config.migrations_dir / DOWN_DIR / name)
        if text is None:
            self._stop(name, problem or "it has no down file")
        return Undo(name, text, self.states[self.env.name].applied[name].checksum)

    def _stop(self, name: str, why: str) -> NoReturn:
        found = safety_before(self.project, self.env.name, name)
        if found and found.get("backup"):
            command = f"d1ops restore {found['backup']} --env {self.env.name}"
            way = f"restore the backup taken just before it was applied: `{command}`"
        elif found and found.get("bookmark"):
            way = (
                f"go back to the Time Travel bookmark taken just before it was applied: "
                f"`d1ops restore --bookmark {found['bookmark']} --env {self.env.name}`"
            )
        else:
            way = f"no d1ops run report records a backup taken before it; see `d1ops backups list {self.env.name}`" + (
                " or Time Travel (`npx wrangler d1 time-travel info`)" if self.env.is_remote else ""
            )
        raise GateRefused(f"{name} cannot be rolled back: {why}. Nothing was changed. To go back past it, {way}.")

    def describe(self) -> str:
        return f"Roll back on {self.env.name}, newest first:\n" + "\n".join(f"  {u.name}" for u in self.undos)

    def untouched(self) -> str:
        return f"Nothing was rolled back on {self.env.name}."

    def apply(self, run: Run) -> None:
        outcomes = [MigrationOutcome(u.name, u.checksum or "", "not run") for u in self.undos]
        run.report.migrations = outcomes
        body = "".join(rollback_batch(u) for u in self.undos)
        started = time.monotonic()
        try:
            guard = [(f"{DOWN_DIR}/{u.name}", u.down) for u in self.undos]
            send_batch(run, Batch("rollback", body, keep_results=False, guard=guard))
        except OutcomeUnknown:
            raise
        except WranglerError as exc:
            steps = [Step(u.name, rollback_batch(u), u.down) for u in self.undos]
            found = explain_failure(run, steps, exc)
            culprit = self.undos[found.index].name if found.index is not None else None
            if found.index is not None:
                outcomes[found.index].result, outcomes[found.index].error = "failed", found.error
            statement = f"\n  statement: {found.statement}" if found.statement else ""
            note = f"\n{found.note}" if found.note else ""
            head = (
                f"The down file of {culprit} failed on {self.env.name}: {found.error}"
                if culprit
                else f"The rollback failed on {self.env.name}: {exc.detail}"
            )
            raise MigrationFailed(
                f"{head}{statement}{note}\nNothing was rolled back: the rollback ran as one atomic batch, so "
                f"{self.env.name} is exactly as it was. Fix {DOWN_DIR}/{culprit or '<file>'} and run the rollback "
                "again."
            ) from exc
        for outcome in outcomes:
            outcome.result, outcome.timing = "rolled back", "process"
        if len(outcomes) == 1:
            outcomes[0].duration_ms = elapsed_ms(started)

    def read_back(self, run: Run, cause: OutcomeUnknown) -> MigrationFailed:
        state = read_back_state(run)
        if state is None:
            return MigrationFailed(
                f"The rollback call on {self.env.name} did not finish ({cause.detail}) and the state could not be "
                f"read back: run `d1ops status {self.env.name}`. Nothing will be retried."
            )
        for o in run.report.migrations:
            o.result = "still applied" if o.name in state.applied else "rolled back"
        still = [o.name for o in run.report.migrations if o.result == "still applied"]
        return MigrationFailed(
            f"The rollback call on {self.env.name} did not finish ({cause.detail}). Read back: "
            + (f"still applied: {', '.join(still)}." if still else "every migration of the plan is rolled back.")
            + " Nothing was retried."
        )


def run_rollback(
    project: Project,
    env_name: str,
    *,
    to: str | None = None,
    steps: int | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    accept_drift: bool = False,
) -> RunReport:
    env = project.config.env(env_name)
    change = RollbackChange(project, env, to=to, steps=steps)
    change.accept_drift = accept_drift
    return run_change(project, change, dry_run=dry_run, confirm=confirm)
