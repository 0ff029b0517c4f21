"""Dump files: stream them, load them into SQLite, compact them for D1, and write SQLite back out as D1 SQL.

Every function streams: a dump of a million rows never sits in memory.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from d1ops.backups.layout import SQL, format_of
from d1ops.sql.schema import (
    ORDINARY_TABLES_QUERY,
    DatabaseSchema,
    ForeignKey,
    declared_foreign_keys,
    lower,
    parents_first,
    read_schema_sqlite,
    table_shape,
)
from d1ops.sql.text import (
    WRANGLER_TRANSACTION,
    StatementTooLarge,
    ident,
    insert_statements,
    iter_statements,
    multi_row,
    quote,
)

SQL_DUMP = "dump.sql"
SCHEMA_FILE = "schema.sql"


def dump_statements(path: Path) -> Iterator[str]:
    """The statements of an SQL dump file, streamed."""
    with path.open(encoding="utf-8") as handle:
        yield from iter_statements(handle)


# How wrangler's export writes a row: `INSERT INTO "t" VALUES(…);` (4.86.0), or with the column list
# `INSERT INTO "t" ("id","body") VALUES(…);` (4.164.0; README: Wrangler versions: facts). Both are read.
_QUOTED = r'"(?:[^"]|"")+"'
_ROW_PREFIX = re.compile(rf"INSERT INTO ({_QUOTED})(?: \({_QUOTED}(?:,{_QUOTED})*\))? VALUES\(")
_SEQUENCE = '"sqlite_sequence"'


def dump_rows(statements: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Each statement (ending in a newline) as (prefix, text): a one-row INSERT `INSERT INTO "t" VALUES(…);` as
    ('INSERT INTO "t" VALUES(', '(…)'), the way wrangler's export writes every row (the prefix keeps a column list
    `("a","b")` when wrangler writes one); any other as ("", statement).
    Each statement is whole (the tokenizer cut it), so a value that looks like a statement stays inside its row.
    """
    prefix = ""
    for statement in statements:
        if not (statement.endswith(";\n") and statement[:1] == "I"):  # e.g. the last (wrangler ends its dump
            statement = statement.strip() + "\n"  # without a newline), or one after a value with a newline
        if not (prefix and statement.startswith(prefix) and statement.endswith(");\n")):
            match = _ROW_PREFIX.match(statement)
            prefix = match.group() if match is not None and statement.endswith(");\n") else ""
        if prefix:
            yield prefix, statement[len(prefix) - 1 : -2]
        else:
            yield "", statement


def write_compact_dump(dump: Path, out: TextIO) -> None:
    """Copy a dump, joining consecutive one-row INSERTs into one table into multi-row INSERTs.

    The same rows and statements otherwise; wrangler's local `execute --file` costs ~1 ms and more per
    statement (100,000 one-row INSERTs: 110 s; the same rows 200 per statement: 2.5 s, measured here).
    """
    for prefix, group in itertools.groupby(dump_rows(restore_order(dump_statements(dump))), key=lambda r: r[0]):
        table = _table_of(prefix)
        if not prefix or table == _SEQUENCE:
            whole = (prefix + text[1:] + ";\n" if prefix else text.strip("\n") + "\n" for _, text in group)
            out.writelines(_as_is(statement) for statement in whole)
            continue
        head = prefix[:-1]
        what = f"table {table}: row"
        out.writelines(multi_row(head, ";\n", (text for _, text in group), what=what))


def _table_of(prefix: str) -> str:
    """The quoted table name of a row prefix ("" for no prefix)."""
    match = _ROW_PREFIX.match(prefix)
    return match.group(1) if match else ""


def _as_is(statement: str) -> str:
    if WRANGLER_TRANSACTION in statement:  # not a row d1ops can split (see sqltext.wrangler_safe_literals)
        raise StatementTooLarge(
            f"a statement of the dump holds the text {WRANGLER_TRANSACTION!r} ({statement[:80].strip()}…): "
            "wrangler's execute --file would delete part of it, so D1 cannot be given it unchanged."
        )
    return statement


def restore_order(statements: Iterable[str]) -> Iterator[str]:
    """The statements of a dump with every CREATE TRIGGER moved to the end.

    wrangler's export writes triggers before views (an INSTEAD OF trigger then names a view not created yet),
    and a trigger created before rows are loaded would fire on them. Triggers are few: buffering them is cheap.
    """
    triggers = []
    for statement in statements:
        if statement.startswith("INSERT") or not _CREATE_TRIGGER.match(statement):
            yield statement
        else:
            triggers.append(statement)
    yield from triggers


_CREATE_TRIGGER = re.compile(r"\s*CREATE\s+(TEMP\w*\s+)?TRIGGER\b", re.IGNORECASE)


def load_dump(dump: Path, db: Path, *, foreign_keys: bool = False, parents: AbsentParents | None = None) -> None:
    """Stream-load an SQL dump into an on-disk SQLite database (memory stays flat for any dump size).

    `foreign_keys`: load it as D1 does, foreign keys on and the whole dump one transaction (its `PRAGMA
    defer_foreign_keys` holds to the end, as in D1's atomic `execute --file`): a row of a table whose parent is
    not created yet fails with D1's own "no such table: main.<parent>", and a row whose parent row is missing
    fails the COMMIT. `parents` stand in for the tables a backup of some tables references (see AbsentParents);
    they are dropped after the load. Without `foreign_keys`, SQLite's default: rows only, no key checked.

    Consecutive one-row INSERTs into one table (wrangler's export writes nothing else) are joined into INSERTs
    of up to 500 rows: SQLite compiles a million one-row statements in ~3.9 s and the same rows joined in ~1.8 s
    (measured here). Every other statement is run as it is. No statement cache: each joined INSERT is new text
    (one transaction with execute() per statement is as fast as executescript() in 1 MB chunks, measured here).
    """
    parents = parents or AbsentParents()
    conn = sqlite3.connect(db, isolation_level=None, cached_statements=0)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        conn.execute("BEGIN")
        for statement in parents.create:
            conn.execute(statement)
        for statement in _joined(dump_rows(restore_order(dump_statements(dump)))):
            conn.execute(statement)
        for statement in parents.fill:
            conn.execute(statement)
        conn.execute("COMMIT")
        parents.drop(conn)
    finally:
        conn.close()


def _joined(rows: Iterable[tuple[str, str]], limit: int = 500) -> Iterator[str]:
    """Statements for SQLite: runs of rows into one table joined, up to `limit` rows per INSERT."""
    for prefix, group in itertools.groupby(rows, key=lambda r: r[0]):
        if not prefix:
            yield from (text for _, text in group)
            continue
        while batch := [text for _, text in itertools.islice(group, limit)]:
            yield prefix[:-1] + ",".join(batch) + ";\n"


def load_backup(folder: Path, manifest: dict[str, Any], db: Path, *, foreign_keys: bool = False) -> None:
    """Load any backup (SQL dump or JSON files) into a temporary SQLite database.

    `foreign_keys`: as D1 loads it (see load_dump), the tables a backup of some tables references stood in for.
    """
    parents = backup_parents(manifest) if foreign_keys else AbsentParents()
    if format_of(manifest) == SQL:
        load_dump(folder / SQL_DUMP, db, foreign_keys=foreign_keys, parents=parents)
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        conn.execute("BEGIN")
        conn.execute("PRAGMA defer_foreign_keys=ON")  # as the SQL written for D1 from these files (dump_sqlite)
        for statement in parents.create:
            conn.execute(statement)
        schema = manifest.get("schema", [])
        for statement in (s for s in schema if is_create_table(s)):
            conn.execute(statement)
        names = [str(t["name"]) for t in manifest["tables"]]
        for table in parents_first(names, read_schema_sqlite(conn).foreign_keys):
            _insert_json_rows(conn, table, folder / f"{table}.json")
        sequence = manifest.get("sqlite_sequence") or []
        if sequence:
            conn.execute("DELETE FROM sqlite_sequence")
            conn.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", sequence)
        rest = [s for s in schema if not is_create_table(s)]
        for statement in (s for s in rest if not _CREATE_TRIGGER.match(s)):  # after the rows: no trigger fires
            conn.execute(statement)
        for virtual in manifest.get("virtual_tables") or []:
            name = virtual["name"]
            if virtual.get("content") == "rows":
                _insert_json_rows(conn, name, folder / f"{name}.json")
            elif virtual.get("content") == "rebuild":
                conn.execute(rebuild_sql(name))
        for statement in (s for s in rest if _CREATE_TRIGGER.match(s)):
            conn.execute(statement)
        for statement in parents.fill:
            conn.execute(statement)
        conn.execute("COMMIT")
        parents.drop(conn)
    finally:
        conn.close()


@dataclass(frozen=True)
class AbsentParents:
    """Stand-ins for the tables that a backup of some tables references and does not hold (posts' users).

    D1 enforces foreign keys: without its parent table, not one row of a child loads ("no such table:
    main.users"), and without the parent rows its rows fail the COMMIT. A load into an empty database (the
    checks of such a backup) creates each parent as a table of its key columns alone (`create`, first), and
    after the rows inserts the distinct keys the rows reference (`fill`, through a temporary index on the
    child's columns, so each key is matched without a scan): the rows are then checked as D1 checks them in the
    database they came from, where the parents exist. A restore into that database needs none of this.
    """

    create: tuple[str, ...] = ()
    fill: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    def drop(self, conn: sqlite3.Connection) -> None:
        """Drop the stand-ins from a loaded SQLite database (foreign keys off: no row of the backup changes)."""
        if self.tables:
            conn.execute("PRAGMA foreign_keys=OFF")
            for table in self.tables:
                conn.execute(f"DROP TABLE {ident(table)}")

    def around(self, out: TextIO, body: Callable[[TextIO], None]) -> None:
        """Write SQL for D1 with the stand-ins: their tables, `body`, their keys."""
        out.writelines(f"{s}\n" for s in self.create)
        body(out)
        out.writelines(f"{s}\n" for s in self.fill)


def absent_parents(schema: Iterable[str], tables: Iterable[str]) -> AbsentParents:
    """The stand-ins a backup of `tables` needs, from the CREATE statements it records (`schema`)."""
    held = lower(tables)
    fks = [fk for fk in declared_foreign_keys(s for s in schema if is_create_table(s)) if fk.parent.lower() not in held]
    by_parent: dict[str, list[ForeignKey]] = {}
    for fk in fks:
        by_parent.setdefault(next((p for p in by_parent if p.lower() == fk.parent.lower()), fk.parent), []).append(fk)
    create: list[str] = []
    fill: list[str] = []
    for parent, keys in by_parent.items():
        primary = next((fk for fk in keys if fk.refs is None), None)
        pk = [f"_d1ops_key{i + 1}" for i in range(len(primary.columns))] if primary else []
        columns = list(pk)
        unique = []
        for fk in keys:
            if fk.refs is not None:
                columns += [c for c in fk.refs if c.lower() not in lower(columns)]
                unique.append(f"UNIQUE ({', '.join(ident(c) for c in fk.refs)})")
        constraints = ([f"PRIMARY KEY ({', '.join(ident(c) for c in pk)})"] if pk else []) + list(dict.fromkeys(unique))
        create.append(f"CREATE TABLE {ident(parent)} ({', '.join([*(ident(c) for c in columns), *constraints])});")
        for fk in keys:
            targets = pk if fk.refs is None else list(fk.refs)
            if len(targets) != len(fk.columns):
                continue  # a key of another arity than the first to the primary key: D1 refuses it anyway
            index = f"_d1ops_parent_key_{len(fill) + 1}"  # hidden from schema reads (the _d1ops_ prefix)
            listed = ", ".join(ident(c) for c in fk.columns)
            present = " AND ".join(f"{ident(c)} IS NOT NULL" for c in fk.columns)
            fill += [
                f"CREATE INDEX {ident(index)} ON {ident(fk.child)} ({listed});",
                f"INSERT OR IGNORE INTO {ident(parent)} ({', '.join(ident(c) for c in targets)}) "
                f"SELECT DISTINCT {listed} FROM {ident(fk.child)} WHERE {present};",
                f"DROP INDEX {ident(index)};",
            ]
    return AbsentParents(tuple(create), tuple(fill), tuple(by_parent))


def backup_parents(manifest: dict[str, Any]) -> AbsentParents:
    """The stand-ins a backup needs when it is loaded on its own: none for a whole database."""
    if manifest.get("whole_database"):
        return AbsentParents()
    return absent_parents(manifest.get("schema") or [], (str(t["name"]) for t in manifest["tables"]))


def _insert_json_rows(conn: sqlite3.Connection, table: str, path: Path) -> None:
    for row in iter_json_rows(path):
        columns = ", ".join(ident(c) for c in row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {ident(table)} ({columns}) VALUES ({marks})", list(row.values()))


def is_create_table(statement: str) -> bool:
    return statement.lstrip().upper().startswith("CREATE TABLE")


def rebuild_sql(virtual: str) -> str:
    return f"INSERT INTO {ident(virtual)}({ident(virtual)}) VALUES('rebuild');\n"


def virtual_columns(conn: sqlite3.Connection, virtual: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({ident(virtual)})")]


def complete_from_schema(db: Path, schema: DatabaseSchema) -> None:
    """Make a database loaded from a per-table export whole: the export held the ordinary tables, their rows,
    `sqlite_sequence` and each regular FTS5 table's `<vt>_content` rows; add the virtual tables with their
    content, then the indexes, views and triggers, each with its exact SQL from `schema`."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for name in schema.virtual_tables:
            kind = schema.fts_content(name)
            content = f"{name}_content"
            if kind == "rows" and content in present:
                conn.execute(f"ALTER TABLE {ident(content)} RENAME TO _d1ops_fts_content")
            conn.execute(_sql_of(schema, name))
            if kind == "rebuild":
                conn.execute(rebuild_sql(name))
            elif kind == "rows" and content in present:
                columns = virtual_columns(conn, name)
                stored = ", ".join(f"c{i}" for i in range(len(columns)))
                targets = ", ".join(ident(c) for c in ["rowid", *columns])
                conn.execute(f"INSERT INTO {ident(name)} ({targets}) SELECT id, {stored} FROM _d1ops_fts_content")
                conn.execute("DROP TABLE _d1ops_fts_content")
        for kind in ("index", "view", "trigger"):
            for o in schema.of_type(kind):
                if o.sql:
                    conn.execute(o.sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _sql_of(schema: DatabaseSchema, name: str) -> str:
    return next(str(o.sql) for o in schema.objects if o.name == name)


def dump_sqlite(db: Path, out: TextIO) -> None:
    """Write an SQLite database as SQL D1 accepts, in an order that restores it whole.

    Ordinary tables first, then their rows, parents before children (multi-row INSERTs within D1's statement
    limit), `sqlite_sequence`,
    indexes, virtual tables (a regular FTS5 table with its rows, an external-content one rebuilt from its
    content table), views, and triggers last, so that no trigger fires on a restored row and no foreign key
    names a table not created yet. FTS5 shadow tables are never written: CREATE VIRTUAL TABLE makes them.
    Streamed; quoted and non-ASCII names are fine.
    """
    conn = sqlite3.connect(db)
    try:
        schema = read_schema_sqlite(conn)
        shadow = set(schema.shadow_tables) | set(schema.virtual_tables)
        tables = [str(r[0]) for r in conn.execute(ORDINARY_TABLES_QUERY) if str(r[0]) not in shadow]
        out.write("PRAGMA defer_foreign_keys=TRUE;\n")
        by_name = {o.name: o for o in schema.objects}
        for table in tables:
            out.write(f"{by_name[table].sql};\n")
        for table in parents_first(tables, schema.foreign_keys):  # D1 defers the checks; no child row waits
            columns = table_shape(conn, table).columns
            rows = conn.execute(f"SELECT {', '.join(ident(c) for c in columns)} FROM {ident(table)}")
            out.writelines(insert_statements(table, columns, rows))
        if _has_table(conn, "sqlite_sequence"):
            kept = set(tables)
            sequence = [r for r in conn.execute("SELECT name, seq FROM sqlite_sequence") if r[0] in kept]
            if sequence:  # the rows above made SQLite write its own; put the backup's (gaps included) instead
                names = ", ".join(quote(str(r[0])) for r in sequence)
                out.write(f"DELETE FROM sqlite_sequence WHERE name IN ({names});\n")
                out.writelines(insert_statements("sqlite_sequence", ["name", "seq"], sequence))
        out.writelines(f"{o.sql};\n" for o in schema.of_type("index") if o.sql)
        for name in schema.virtual_tables:
            out.write(f"{by_name[name].sql};\n")
            kind = schema.fts_content(name)
            if kind == "rebuild":
                out.write(rebuild_sql(name))
            elif kind == "rows":
                columns = virtual_columns(conn, name)
                rows = conn.execute(f"SELECT rowid, {', '.join(ident(c) for c in columns)} FROM {ident(name)}")
                out.writelines(insert_statements(name, ["rowid", *columns], rows))
        for kind in ("view", "trigger"):
            out.writelines(f"{o.sql};\n" for o in schema.of_type(kind) if o.sql)
    finally:
        conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


# -- JSON table files -------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__}")


def write_table_json(conn: sqlite3.Connection, table: str, path: Path, *, with_rowid: bool = False) -> int:
    """A JSON array of row objects, one row per line, streamed from SQLite (never all rows in memory).

    `with_rowid`: the rowid first, as "rowid" (a regular FTS5 table, whose rowids are its identity)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        cursor = conn.execute(f"SELECT {'rowid AS rowid, ' if with_rowid else ''}* FROM {ident(table)}")
        columns = [d[0] for d in cursor.description]
        out.write("[")
        for row in cursor:
            out.write(",\n" if count else "\n")
            out.write(json.dumps(dict(zip(columns, row, strict=True)), default=_json_default, ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
    return count


def iter_json_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of a file written by write_table_json."""
    with path.open(encoding="utf-8") as handle:
        first = handle.readline().strip()
        if first == "[]":
            return
        if first != "[":
            raise ValueError(f"{path.name}: not a d1ops JSON table file")
        for line in handle:
            line = line.rstrip("\n")
            if line == "]":
                return
            row = json.loads(line.rstrip(","))
            yield {k: _json_value(v) for k, v in row.items()}
        raise ValueError(f"{path.name}: truncated (no closing ])")


def _json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"])
    return value
