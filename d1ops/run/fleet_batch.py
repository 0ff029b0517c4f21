"""One database's batch in a fleet: its text (the run's apply pieces: lease guard, row guard, migrations with
their tracking rows, release), how it is sent (one /query call, or the import flow over D1's limit for one
request), and which migration a failed batch blames (no API call)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from d1ops.project.migrations import MigrationFile
from d1ops.run.apply import batch_text
from d1ops.run.fleet_targets import Target
from d1ops.run.replay import schema_sql
from d1ops.run.tracking import CHECKSUM_TABLE, migration_batch
from d1ops.sql.rowguard import RowGuard
from d1ops.sql.schema import DatabaseSchema
from d1ops.sql.text import D1_STATEMENT_BYTES, utf8_len

if TYPE_CHECKING:
    from d1ops.api.client import D1Api


def fleet_batch(
    owner: str, pending: list[MigrationFile], sqls: list[str], applied_by: str, guard: RowGuard | None = None
) -> str:
    """The one atomic batch of a database: lease guard, row guard's counts, each migration with its tracking
    rows, the recorded durations, row guard's check, release of the lease (`apply.batch_text`: the run's own
    apply batch, built from the same tracking.py and rowguard.py pieces)."""
    body = "".join(migration_batch(m, sql, applied_by) for m, sql in zip(pending, sqls, strict=True))
    names = ", ".join("'" + m.name.replace("'", "''") + "'" for m in pending)
    body += f"SELECT name, duration_ms FROM {CHECKSUM_TABLE} WHERE name IN ({names});\n"
    return batch_text(owner, body, guard=guard)


def failing_migration(schema: DatabaseSchema | None, pending: list[MigrationFile], sqls: list[str]) -> str | None:
    """Which migration of a failed batch fails: the batch replayed one migration at a time on the database's
    schema, in memory (no API call). None when the failure needs the data (a constraint on existing rows)."""
    if schema is None:
        return None
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        try:
            conn.executescript(schema_sql(schema))
        except sqlite3.Error:
            return None
        for m, sql in zip(pending, sqls, strict=True):
            try:
                conn.executescript(sql)
            except sqlite3.Error:
                return m.name
        return None
    finally:
        conn.close()


def send_fleet_batch(api: D1Api, target: Target, text: str) -> str:
    """Send one database's batch: one `/query` call, or, over D1's limit for one request (100,000 bytes of SQL),
    the import flow wrangler uses for `execute --remote --file` (init, upload, ingest, poll: atomic too).
    Returns how it went ("query" or "import")."""
    if utf8_len(text) <= D1_STATEMENT_BYTES:
        api.query(target.id, text, idempotent=False, what=f"apply on {target.name}")
        return "query"
    api.import_sql(target.id, text, what=f"apply on {target.name} (import)")
    return "import"


def guard_migration(guard: RowGuard | None, pending: list[MigrationFile]) -> str | None:
    """The migration a row guard refusal blames: the only one, or the first that deletes from or drops a table."""
    if len(pending) == 1:
        return pending[0].name
    where = [w for w in (guard.effects.where.values() if guard else ()) if w]
    return next((m.name for m in pending if m.name in where), None)
