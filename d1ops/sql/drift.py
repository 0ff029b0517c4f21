"""Drift: the schema a database should have (its applied migrations, replayed in Python's sqlite3) against the
schema it has. Pure: no process; the live schema is the one the run or status already read.

A replay is cached under the cache folder by the checksums of the migrations it replays. Not drift: d1ops's
own tables, wrangler's `d1_migrations`, `_cf_*`, `sqlite_*`, FTS5 shadow tables (their virtual table is
compared instead). SQL texts are compared with whitespace normalised.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from d1ops.sql.schema import DatabaseSchema, SchemaObject, read_schema_sqlite
from d1ops.sql.text import replay_statement, split_statements

MISSING, EXTRA, CHANGED = "missing", "extra", "changed"
_NOT_DRIFT = re.compile(r"^(d1ops_|_d1ops_|_cf_|sqlite_)|^d1_migrations$", re.IGNORECASE)
_DDL = re.compile(r"^\s*(CREATE|DROP|ALTER)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DriftItem:
    """One object that differs: `missing` (the migrations make it, the database lacks it), `extra` (the
    database has it, no migration makes it) or `changed` (both, with other SQL)."""

    kind: str
    type: str
    name: str
    expected_sql: str | None
    live_sql: str | None

    def describe(self) -> str:
        if self.kind == CHANGED:
            return (
                f"{self.type} {self.name} changed: the migrations make `{self.expected_sql}`, "
                f"the database has `{self.live_sql}`"
            )
        if self.kind == EXTRA:
            return f"extra {self.type} {self.name} (not made by any migration): `{self.live_sql}`"
        return f"missing {self.type} {self.name} (made by the migrations): `{self.expected_sql}`"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def normalise(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip().rstrip(";").strip()


def _compared(schema: DatabaseSchema) -> dict[tuple[str, str], SchemaObject]:
    shadows = {s.lower() for s in schema.shadow_tables}
    return {
        (o.type, o.name.lower()): o
        for o in schema.objects
        if not _NOT_DRIFT.search(o.name)
        and not _NOT_DRIFT.search(o.tbl_name)
        and o.name.lower() not in shadows
        and o.sql  # autoindexes (no SQL) follow their table
    }


def check_drift(expected: DatabaseSchema, live: DatabaseSchema) -> list[DriftItem]:
    """Every object that differs between the schema the migrations make and the live one."""
    want, have = _compared(expected), _compared(live)
    items = []
    for key, obj in want.items():
        other = have.get(key)
        if other is None:
            items.append(DriftItem(MISSING, obj.type, obj.name, normalise(obj.sql), None))
        elif normalise(obj.sql) != normalise(other.sql):
            items.append(DriftItem(CHANGED, obj.type, obj.name, normalise(obj.sql), normalise(other.sql)))
    for key, obj in have.items():
        if key not in want:
            items.append(DriftItem(EXTRA, obj.type, obj.name, None, normalise(obj.sql)))
    return items


def replay_schema(migrations: Sequence[tuple[str, str]], start: DatabaseSchema | None = None) -> DatabaseSchema | None:
    """The schema these (name, SQL) migrations build from an empty database (or from `start`: the schema adopt
    recorded), or None when one of their schema statements fails here (the history does not replay: take what
    adopt recorded instead, see `schema_after_adopt`)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for ddl in start.restore_ddl() if start is not None else ():
            try:
                conn.execute(ddl)
            except sqlite3.Error:
                return None  # e.g. a module this SQLite lacks: the recorded schema cannot be rebuilt here
        for _, sql in migrations:
            for statement in split_statements(sql):
                try:
                    replay_statement(conn, statement)
                except sqlite3.Error:
                    if _DDL.match(statement):
                        return None
        return read_schema_sqlite(conn)
    finally:
        conn.close()


def schema_after_adopt(
    applied: Sequence[tuple[str, str]], recorded: dict[str, DatabaseSchema]
) -> DatabaseSchema | None:
    """The schema a database whose history was adopted should have: what adopt recorded with the newest applied
    migration it was recorded for, then the (name, SQL) migrations applied after that one, replayed on it. None
    when nothing was recorded for any applied migration, or the later ones do not replay."""
    names = [name for name, _ in applied]
    through = next((n for n in reversed(names) if n in recorded), None)
    if through is None:
        return None
    return replay_schema(applied[names.index(through) + 1 :], recorded[through])


def schema_to_json(schema: DatabaseSchema) -> list[dict[str, str | None]]:
    return [{"type": o.type, "name": o.name, "tbl_name": o.tbl_name, "sql": o.sql} for o in schema.objects]


def schema_from_json(rows: list[dict[str, str | None]]) -> DatabaseSchema:
    return DatabaseSchema(
        tuple(SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), r["sql"]) for r in rows)
    )


def expected_schema(migrations: Sequence[tuple[str, str, str]], cache_dir: Path | None = None) -> DatabaseSchema | None:
    """The replayed schema of (name, checksum, SQL) migrations, cached in `cache_dir` by their checksums."""
    key = hashlib.sha256("\n".join(f"{n}:{c}" for n, c, _ in migrations).encode()).hexdigest()[:32]
    path = cache_dir / f"schema-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return None if data is None else schema_from_json(data)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: replay again
    schema = replay_schema([(n, s) for n, _, s in migrations])
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(None if schema is None else schema_to_json(schema)), encoding="utf-8")
        except OSError:
            pass  # a cache only
    return schema
