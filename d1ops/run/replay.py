"""Replaying migrations on a scratch copy of an environment, never on the environment itself.

A copy is a scratch local D1 (`scratch.py`) loaded with the environment's data (a backup's dump, a fresh
export) or, when no data was taken, with its schema alone. On it:
- an all-or-nothing run whose batch failed finds the migration, the statement and SQLite's message;
- a rehearsal applies the pending migrations one by one, timing each and telling what it did to the data:
  rows inserted, updated and deleted per table, the rows lost to ON DELETE actions, the row guard's verdict.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from d1ops.backups.dumpfile import SQL_DUMP, dump_sqlite, load_backup, write_compact_dump
from d1ops.backups.scratch import ScratchD1
from d1ops.errors import WranglerError
from d1ops.project.migrations import MigrationFile
from d1ops.run.tracking import TRACKING_DDL, actor, migration_batch
from d1ops.sql.rowchanges import table_changes
from d1ops.sql.rowguard import UNGUARDED, losses_between, row_guard
from d1ops.sql.schema import DatabaseSchema, read_schema_sqlite
from d1ops.sql.text import iter_statements, sql_for_batch, strip_comments
from d1ops.support import progress

if TYPE_CHECKING:
    from d1ops.run.sequence import Run


@dataclass
class Copy:
    scratch: ScratchD1
    source: str  # what it was loaded from, for messages


def schema_sql(schema: DatabaseSchema) -> str:
    """The DDL that rebuilds a schema without its rows (the one order: DatabaseSchema.restore_ddl)."""
    return "".join(f"{sql};\n" for sql in schema.restore_ddl())


def load_copy(scratch: ScratchD1, source: Path) -> None:
    """Load `source` into the scratch D1, with d1ops's tracking tables (as every run creates them before it
    applies anything): a database d1ops never tracked, or an empty one, is copied as the run would find it."""
    with source.open("a", encoding="utf-8") as out:
        out.write(f"\n{TRACKING_DDL}\n")
    scratch.run_file(source)


def copy_from_backup(scratch: ScratchD1, folder: Path, manifest: dict[str, object], work: Path) -> Copy:
    """Load a whole-database backup (SQL or JSON) into the scratch D1: one process."""
    source = work / "copy.sql"
    with source.open("w", encoding="utf-8") as out:
        if manifest.get("format", "sql") == "sql":
            write_compact_dump(folder / SQL_DUMP, out)
        else:
            db = work / "copy.sqlite"
            load_backup(folder, manifest, db)  # type: ignore[arg-type]
            dump_sqlite(db, out)
    load_copy(scratch, source)
    return Copy(scratch, f"the backup {folder.name}")


def copy_from_dump(scratch: ScratchD1, dump: Path, work: Path, label: str) -> Copy:
    source = work / "copy.sql"
    with source.open("w", encoding="utf-8") as out:
        write_compact_dump(dump, out)
    load_copy(scratch, source)
    return Copy(scratch, label)


def copy_from_schema(scratch: ScratchD1, schema: DatabaseSchema, work: Path) -> Copy:
    source = work / "schema.sql"
    source.write_text(schema_sql(schema), encoding="utf-8")
    load_copy(scratch, source)
    return Copy(scratch, "the schema alone (no backup of the data was taken)")


def copy_for_run(run: Run) -> Copy:
    """A scratch copy of what the run's environment held before the apply: the backup just taken, or the schema."""
    scratch = ScratchD1(run.wrangler, run.work / "replay")
    backup = run.safety_backup
    if backup is not None and backup.verified and backup.manifest.get("whole_database"):
        return copy_from_backup(scratch, backup.path, backup.manifest, run.work)
    assert run.schema is not None, "the run reads the schema with its lock"
    return copy_from_schema(scratch, run.schema, run.work)


# -- naming a failure -------------------------------------------------------------------------------------------
@dataclass
class Found:
    index: int | None  # the failing migration, or None: the replay did not reproduce the failure
    error: str | None = None
    statement: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Step:
    """One unit of a batch: its name, the SQL sent for it (tracking rows included), and the user's SQL in it."""

    name: str
    batch: str
    sql: str


def explain_failure(run: Run, steps: list[Step], failure: WranglerError) -> Found:
    """Replay a failed batch one step at a time on a scratch copy, to name the step (and statement) that fails."""
    try:
        copy = copy_for_run(run)
    except (WranglerError, OSError, sqlite3.Error, ValueError) as exc:
        detail = exc.detail if isinstance(exc, WranglerError) else str(exc)
        return Found(None, note=f"(The failing step could not be named: a scratch copy failed to load: {detail})")
    for i, step in enumerate(steps):
        batch = run.work / f"replay-{i:04d}.sql"
        batch.write_text(step.batch, encoding="utf-8")
        try:
            copy.scratch.run_file(batch)
        except WranglerError as exc:
            statement, sqlite_error = failing_statement(copy.scratch, step.sql, run.work)
            error = exc.detail
            if sqlite_error and sqlite_error not in error:
                error = f"{error} (SQLite on the copy: {sqlite_error})"
            return Found(i, error=error, statement=statement)
    return Found(
        None,
        note=(
            f"A replay of the {len(steps)} step(s) one at a time on a scratch copy ({copy.source}) did not fail: "
            f"the failure depends on data the copy lacks, or on {run.env.name} itself. wrangler said: "
            f"{failure.detail}"
        ),
    )


def failing_statement(scratch: ScratchD1, sql: str, work: Path) -> tuple[str | None, str | None]:
    """The first statement of `sql` that SQLite refuses on a copy of the scratch database, and its message."""
    probe = work / "probe.sqlite"
    probe.unlink(missing_ok=True)
    if not scratch.snapshot(probe):
        return None, None
    conn = sqlite3.connect(probe, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN")
        for statement in iter_statements([sql]):
            if not strip_comments(statement):
                continue
            try:
                conn.execute(statement)
            except sqlite3.Error as exc:
                return shorten(strip_comments(statement)), str(exc)
        return None, None
    finally:
        conn.close()
        probe.unlink(missing_ok=True)


def shorten(statement: str, limit: int = 240) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- rehearsal ----------------------------------------------------------------------------------------------------
@dataclass
class Rehearsed:
    name: str
    result: str  # applied | failed | check failed | refused by the row guard | not run
    duration_ms: int | None = None
    rows_changed: dict[str, int] = field(default_factory=dict)  # table → rows after − rows before (net)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table → inserted, updated, deleted
    tables_created: list[str] = field(default_factory=list)
    tables_dropped: list[str] = field(default_factory=list)
    victims: list[dict[str, object]] = field(default_factory=list)  # rows lost where it neither deletes nor drops
    row_guard: str = "passes"  # passes | refuses | off | not run (the copy could not be read)
    checks: list[dict[str, object]] = field(default_factory=list)
    error: str | None = None
    statement: str | None = None


VERIFY_MARK = "-- d1ops: verify "


def verify_checks(sql: str) -> list[str]:
    """The `-- d1ops: verify <SQL>` lines of a migration: each must return a first column that is true."""
    lines = (line.strip() for line in sql.splitlines())
    return [line[len(VERIFY_MARK) :].strip() for line in lines if line.startswith(VERIFY_MARK)]


def rehearse_on(copy: Copy, pending: list[MigrationFile], work: Path, *, row_guard_on: bool = True) -> list[Rehearsed]:
    """Apply `pending` to the copy one at a time: one process each. Around each, the copy is snapshotted with
    sqlite3 (no process): the two snapshots give the rows it inserted, updated and deleted per table, and the
    row guard's counts (every table's rows, every SET NULL / SET DEFAULT link) taken on both name the victims
    (rows lost in tables it neither deletes from nor drops, with the cause) and whether the guard would refuse
    it (`row_guard_on`: the environment's `row_guard`)."""
    who = actor()
    results = [Rehearsed(m.name, "not run") for m in pending]
    snapshots = [work / "rehearse-a.sqlite", work / "rehearse-b.sqlite"]
    for path in snapshots:
        path.unlink(missing_ok=True)
    have_before = copy.scratch.snapshot(snapshots[0])
    for i, (m, outcome) in enumerate(zip(pending, results, strict=True)):
        progress.step(f"Rehearsing {m.name} on a scratch copy ({i + 1}/{len(pending)})")
        sql = m.read_sql()
        before, after = snapshots[i % 2], snapshots[(i + 1) % 2]
        batch = work / f"rehearse-{i:04d}.sql"
        batch.write_text(migration_batch(m, sql_for_batch(sql), who), encoding="utf-8")
        started = time.monotonic()
        try:
            copy.scratch.run_file(batch)
        except WranglerError as exc:
            outcome.result, outcome.error = "failed", exc.detail
            outcome.duration_ms = int((time.monotonic() - started) * 1000)
            outcome.statement, _ = failing_statement(copy.scratch, sql, work)
            break
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        outcome.result = "applied"
        after.unlink(missing_ok=True)
        if have_before and copy.scratch.snapshot(after):
            effect_on_data(outcome, before, after, sql, guard_on=row_guard_on)
        else:
            outcome.row_guard = "not run"
        have_before = after.is_file()
        outcome.checks = run_checks(copy.scratch, verify_checks(sql))
        if outcome.row_guard == "refuses":
            outcome.result = "refused by the row guard"
            break
        if any(not c["passed"] for c in outcome.checks):
            outcome.result = "check failed"
            break
    for path in snapshots:
        path.unlink(missing_ok=True)
    return results


def effect_on_data(outcome: Rehearsed, before: Path, after: Path, sql: str, *, guard_on: bool = True) -> None:
    """Fill in what one migration did to the data, from snapshots of the copy before and after it."""
    changes = table_changes(before, after, leave_out=UNGUARDED)
    outcome.rows = {c.table: {"inserted": c.inserted, "updated": c.updated, "deleted": c.deleted} for c in changes}
    outcome.rows_changed = {c.table: c.net for c in changes if c.net}
    outcome.tables_created = sorted(c.table for c in changes if c.rows_before is None)
    outcome.tables_dropped = sorted(c.table for c in changes if c.rows_after is None)
    old = sqlite3.connect(f"file:{before}?mode=ro", uri=True)
    new = sqlite3.connect(f"file:{after}?mode=ro", uri=True)
    try:
        guard = row_guard(read_schema_sqlite(old), [(outcome.name, sql)], honour_declarations=False)
        losses = losses_between(guard, old, new)
    finally:
        old.close()
        new.close()
    outcome.victims = [asdict(loss) for loss in losses]
    refused = [loss for loss in losses if loss.declared is None]
    if not guard_on:
        outcome.row_guard = "off"
        if refused:  # nothing stops it: the run does not fail, the victims above are what it loses
            outcome.error = "row_guard is off for this environment: migrate would apply it and lose the rows above."
        return
    outcome.row_guard = "refuses" if refused else "passes"
    if refused:
        outcome.error = (
            f"the row guard would refuse it, so migrate applies nothing of it ({len(refused)} undeclared "
            "loss(es) above). If the loss is intended, declare it: `-- d1ops: loses rows in TABLE[, TABLE…] <reason>`."
        )


def run_checks(scratch: ScratchD1, checks: Iterable[str]) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    path = scratch.sqlite_file()
    if path is None:
        return results
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for check in checks:
            try:
                row = conn.execute(check).fetchone()
                passed = bool(row and row[0])
                results.append({"sql": check, "passed": passed, "value": row[0] if row else None})
            except sqlite3.Error as exc:
                results.append({"sql": check, "passed": False, "error": str(exc)})
    finally:
        conn.close()
    return results
