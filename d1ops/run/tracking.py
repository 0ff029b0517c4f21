"""Applied state, kept in the database itself.

- `d1_migrations` is wrangler's own table, created with wrangler's exact DDL, so `wrangler d1 migrations list`
  agrees with d1ops and a database migrated by wrangler is adopted as it is.
- `d1ops_migrations` holds what wrangler lacks: the checksum of each applied file, who applied it, how long it took.
- `d1ops_lock` holds at most one row: the run that may change the database, and when its lease expires. A lease
  that has expired (its run died, or ran far past any sane length) is taken over by the next run, with a warning.
- `d1ops_schema` holds the schema `adopt` recorded with the history it adopted, one row per object (so each
  INSERT stays far below D1's 100,000-byte statement): what drift compares a database against when that history
  does not replay on an empty database. Only adopt creates it.

A migration's SQL and both tracking rows go to wrangler in one `execute --file`, which D1 runs atomically:
a failing statement records nothing.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from d1ops.errors import WranglerError
from d1ops.project.config import Environment
from d1ops.project.migrations import MigrationFile
from d1ops.sql.schema import SCHEMA_READ, DatabaseSchema, SchemaObject, schema_from
from d1ops.sql.text import quote
from d1ops.wrangler.runner import Wrangler

WRANGLER_TABLE = "d1_migrations"
CHECKSUM_TABLE = "d1ops_migrations"
LOCK_TABLE = "d1ops_lock"
SCHEMA_TABLE = "d1ops_schema"
TRACKING_TABLES = (WRANGLER_TABLE, CHECKSUM_TABLE, LOCK_TABLE, SCHEMA_TABLE)

# wrangler 4.86.0's initMigrationsTable, character for character.
WRANGLER_DDL = f"""CREATE TABLE IF NOT EXISTS {WRANGLER_TABLE}(
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		name       TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);"""
CHECKSUM_DDL = f"""CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE}(
  name        TEXT PRIMARY KEY,
  checksum    TEXT NOT NULL,
  applied_at  TEXT NOT NULL,
  applied_by  TEXT NOT NULL,
  duration_ms INTEGER
);"""
LOCK_DDL = f"""CREATE TABLE IF NOT EXISTS {LOCK_TABLE}(
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  owner       TEXT NOT NULL,
  acquired_at TEXT NOT NULL,
  expires_at  TEXT
);"""
SCHEMA_DDL = f"""CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE}(
  through     TEXT NOT NULL,
  seq         INTEGER NOT NULL,
  type        TEXT NOT NULL,
  name        TEXT NOT NULL,
  tbl_name    TEXT NOT NULL,
  sql         TEXT,
  recorded_at TEXT NOT NULL,
  PRIMARY KEY (through, seq)
);"""
TRACKING_DDL = f"{WRANGLER_DDL}\n{CHECKSUM_DDL}\n{LOCK_DDL}"
"""The tracking tables every run creates where they are missing (in its lock call); adopt adds SCHEMA_DDL."""
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


def actor() -> str:
    """Who is running d1ops: $D1OPS_ACTOR, else user@host."""
    explicit = os.environ.get("D1OPS_ACTOR") or os.environ.get("GITHUB_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class AppliedMigration:
    name: str
    applied_at: str
    checksum: str | None
    applied_by: str | None
    duration_ms: int | None


@dataclass(frozen=True)
class EnvState:
    """What one environment's database says has been applied."""

    env: str
    applied: dict[str, AppliedMigration]
    lock_owner: str | None = None
    lock_acquired_at: str | None = None
    lock_expires_at: str | None = None
    taken_over: str | None = None  # the holder of the expired lease this run took over, if any
    schema: DatabaseSchema | None = None  # read in the same call when asked (status: drift)

    @property
    def applied_names(self) -> list[str]:
        return list(self.applied)

    def lock_age(self) -> str:
        """How long the lock has been held, e.g. '2 h 05 min' ('' if unknown)."""
        return _age(self.lock_acquired_at)

    def lease_live(self) -> bool:
        """The lock's lease has not expired yet: its run may still be going. (A lock taken before leases existed
        has no expiry: whether it is live cannot be told.)"""
        until = _parse_utc(self.lock_expires_at)
        return self.lock_owner is not None and until is not None and until > datetime.now(UTC)


def _parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(since: str | None) -> str:
    start = _parse_utc(since)
    if start is None:
        return ""
    seconds = max(0, int((datetime.now(UTC) - start).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


_STATE_QUERY = f"""SELECT m.id, m.name, m.applied_at, c.checksum, c.applied_by, c.duration_ms
FROM {WRANGLER_TABLE} m LEFT JOIN {CHECKSUM_TABLE} c ON c.name = m.name ORDER BY m.id"""
# `*`: reads a lock table with or without expires_at (databases locked before leases existed).
_LOCK_QUERY = f"SELECT * FROM {LOCK_TABLE} WHERE id = 1"


def _applied_from(rows: list[dict[str, object]]) -> dict[str, AppliedMigration]:
    applied: dict[str, AppliedMigration] = {}
    for row in rows:
        duration = row.get("duration_ms")
        applied[str(row["name"])] = AppliedMigration(
            name=str(row["name"]),
            applied_at=str(row.get("applied_at") or ""),
            checksum=row.get("checksum") or None,  # type: ignore[arg-type]
            applied_by=row.get("applied_by") or None,  # type: ignore[arg-type]
            duration_ms=int(duration) if isinstance(duration, int | float) else None,
        )
    return applied


def read_state(wrangler: Wrangler, env: Environment, *, with_schema: bool = False) -> EnvState:
    """Read applied migrations without writing anything: 1 wrangler process (2 on a never-tracked database).
    `with_schema`: the schema too, in the same call."""
    extra = f"\n{SCHEMA_READ}" if with_schema else ""
    try:
        result = wrangler.execute(env, command=f"{_STATE_QUERY};\n{_LOCK_QUERY};{extra}")
        state = _state_from(env, result[0].results, result[1].results)
        return replace(state, schema=schema_from(result)) if with_schema else state
    except WranglerError as exc:
        if "no such table" not in exc.detail:
            raise
    present = {
        str(r["name"])
        for r in wrangler.execute(
            env,
            command="SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            f"({', '.join(quote(t) for t in TRACKING_TABLES)})",
        )[0].results
    }
    queries = []
    if WRANGLER_TABLE in present:
        queries.append(
            _STATE_QUERY
            if CHECKSUM_TABLE in present
            else f"SELECT id, name, applied_at FROM {WRANGLER_TABLE} ORDER BY id"
        )
    if LOCK_TABLE in present:
        queries.append(_LOCK_QUERY)
    if not queries and not with_schema:
        return EnvState(env=env.name, applied={})
    result = wrangler.execute(env, command=";\n".join(queries) + (";" if queries else "") + extra)
    rows = result[0].results if WRANGLER_TABLE in present else []
    lock_rows = result[len(queries) - 1].results if LOCK_TABLE in present else []
    state = _state_from(env, rows, lock_rows)
    return replace(state, schema=schema_from(result)) if with_schema else state


def _state_from(env: Environment, rows: list[dict[str, object]], lock_rows: list[dict[str, object]]) -> EnvState:
    lock = lock_rows[0] if lock_rows else {}
    return EnvState(
        env=env.name,
        applied=_applied_from(rows),
        lock_owner=lock.get("owner") or None,  # type: ignore[arg-type]
        lock_acquired_at=lock.get("acquired_at") or None,  # type: ignore[arg-type]
        lock_expires_at=lock.get("expires_at") or None,  # type: ignore[arg-type]
    )


def read_states(
    wrangler: Wrangler,
    envs: list[Environment],
    *,
    readers: dict[str, Callable[[], EnvState]] | None = None,
) -> dict[str, EnvState]:
    """Read several environments at once: one wrangler process each, all side by side (up to 2 per core).

    `readers` replaces the plain read for some environments (e.g. the one a run locks in the same call).
    """
    readers = readers or {}

    def read(env: Environment) -> EnvState:
        reader = readers.get(env.name)
        return reader() if reader else read_state(wrangler, env)

    if len(envs) == 1:
        return {envs[0].name: read(envs[0])}
    # All at once (up to 2 per core, at least 4): a read is mostly node starting up, so three reads side by side
    # on 2 cores take ~1.5 calls, where two rounds of two take 2 (status --all: see `make bench`).
    with ThreadPoolExecutor(max_workers=min(len(envs), max(4, 2 * (os.cpu_count() or 1)))) as pool:
        futures = {env.name: pool.submit(read, env) for env in envs}
        return {name: future.result() for name, future in futures.items()}


def migration_batch(migration: MigrationFile, sql: str, applied_by: str) -> str:
    """The file sent to wrangler for one migration: a start marker, its SQL, both tracking rows.

    The start marker goes first so the duration is measured by the database inside the same atomic batch.
    """
    name = quote(migration.name)
    parts = [
        f"INSERT OR REPLACE INTO {CHECKSUM_TABLE}(name, checksum, applied_at, applied_by, duration_ms) "
        f"VALUES ({name}, {quote(migration.checksum)}, {NOW}, {quote(applied_by)}, NULL);\n",
        sql,
        f"INSERT INTO {WRANGLER_TABLE} (name) values ({name});\n",
        f"UPDATE {CHECKSUM_TABLE} SET duration_ms = "
        f"CAST(ROUND((julianday('now') - julianday(applied_at)) * 86400000) AS INTEGER) WHERE name = {name};\n",
    ]
    return "".join(parts)


def adopted_rows(files: list[MigrationFile], applied_by: str) -> str:
    """Both tracking rows of each file, recorded as applied without running it (`d1ops adopt`)."""
    parts = []
    for m in files:
        name = quote(m.name)
        parts.append(f"INSERT INTO {WRANGLER_TABLE} (name) values ({name});\n")
        parts.append(
            f"INSERT OR REPLACE INTO {CHECKSUM_TABLE}(name, checksum, applied_at, applied_by, duration_ms) "
            f"VALUES ({name}, {quote(m.checksum)}, {NOW}, {quote(applied_by)}, NULL);\n"
        )
    return "".join(parts)


def record_schema_sql(through: str, schema: DatabaseSchema) -> str:
    """The statements adopt's batch holds to record `schema` (tracking tables left out) as the database's when
    its history was adopted through `through`; a schema recorded before for the same name is replaced."""
    parts = [SCHEMA_DDL, f"\nDELETE FROM {SCHEMA_TABLE} WHERE through = {quote(through)};\n"]
    kept = [o for o in schema.objects if o.name not in TRACKING_TABLES and o.tbl_name not in TRACKING_TABLES]
    for seq, o in enumerate(kept, 1):
        sql = "NULL" if o.sql is None else quote(o.sql)
        parts.append(
            f"INSERT INTO {SCHEMA_TABLE}(through, seq, type, name, tbl_name, sql, recorded_at) VALUES "
            f"({quote(through)}, {seq}, {quote(o.type)}, {quote(o.name)}, {quote(o.tbl_name)}, {sql}, {NOW});\n"
        )
    return "".join(parts)


def rolled_back_rows(name: str) -> str:
    """Both tracking rows of one migration removed (after its down file, in the same batch: `d1ops rollback`)."""
    quoted = quote(name)
    return f"DELETE FROM {WRANGLER_TABLE} WHERE name = {quoted};\nDELETE FROM {CHECKSUM_TABLE} WHERE name = {quoted};\n"


def adopt_checksums_sql(files: tuple[MigrationFile, ...], owner: str) -> str:
    """The checksum of the file on disk recorded for each migration plain wrangler applied (no d1ops row yet),
    only while `owner` holds the lock (the lock call's batch, run/lease.py)."""
    values = ", ".join(f"({quote(f.name)}, {quote(f.checksum)})" for f in files)
    return (
        f"INSERT INTO {CHECKSUM_TABLE}(name, checksum, applied_at, applied_by, duration_ms)\n"
        f"SELECT m.name, f.column2, m.applied_at, 'adopted from wrangler', NULL\n"
        f"FROM {WRANGLER_TABLE} m JOIN (VALUES {values}) f ON f.column1 = m.name\n"
        f"WHERE m.name NOT IN (SELECT name FROM {CHECKSUM_TABLE})\n"
        f"  AND EXISTS (SELECT 1 FROM {LOCK_TABLE} WHERE id = 1 AND owner = {quote(owner)});"
    )


def read_recorded_schemas(
    wrangler: Wrangler, env: Environment, live: DatabaseSchema | None
) -> dict[str, DatabaseSchema]:
    """What adopt recorded in `env`: the migration adopted through → the schema then. One wrangler process, only
    when its live schema (read before) has adopt's table; else {} and none. Drift reads it only for a history
    that does not replay."""
    if live is None or SCHEMA_TABLE not in {t.lower() for t in live.tables}:
        return {}
    try:
        rows = wrangler.execute(
            env, command=f"SELECT through, type, name, tbl_name, sql FROM {SCHEMA_TABLE} ORDER BY through, seq"
        )[0].results
    except WranglerError as exc:
        if "no such table" in exc.detail:
            return {}
        raise
    objects: dict[str, list[SchemaObject]] = {}
    for r in rows:
        sql = r.get("sql")
        objects.setdefault(str(r["through"]), []).append(
            SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), None if sql is None else str(sql))
        )
    return {through: DatabaseSchema(tuple(objs)) for through, objs in objects.items()}
