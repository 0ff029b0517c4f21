"""What a change did to each table's rows: rows inserted, updated and deleted, from two SQLite files of the same
database taken before and after it (a rehearsal's scratch copy, snapshotted around each migration). Pure
sqlite3; no process.

Why compare snapshots rather than read SQLite's changes counters per statement: the counters count what a
statement did itself, not what its triggers or ON DELETE actions did in other tables (the rows a table rebuild
loses to a CASCADE are the ones that matter), and an INSERT OR REPLACE or an UPDATE that writes the same
value counts rows the data never lost or changed. Two snapshots tell what happened to the data, by any path.

Rows are matched by key: the primary key when both sides have its columns (a WITHOUT ROWID table's only key; a
rebuilt table keeps it even where its rowids are renumbered), else the rowid. A matched row is updated when a
column both sides have differs as stored, or when a column the change added holds other than its default (a
backfill). Every count is one SQL statement over an ATTACHed file, so a table of millions of rows is never held
in memory; a key lookup is one B-tree search.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from d1ops.sql.schema import Shape, lower, read_schema_sqlite, table_shape
from d1ops.sql.text import ident

ROWID = "rowid"
_VOLATILE_DEFAULT = re.compile(r"\b(CURRENT_|random|strftime|datetime|date|time|julianday)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TableChange:
    table: str
    inserted: int
    updated: int
    deleted: int
    rows_before: int | None  # None: the change created the table
    rows_after: int | None  # None: the change dropped it
    matched_by: str  # "rowid", "primary key (a, b)", or "count" (no key both sides share: net change only)

    @property
    def net(self) -> int:
        return (self.rows_after or 0) - (self.rows_before or 0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _readonly(path: Path) -> str:
    return f"file:{path}?mode=ro"


def _tables(path: Path, leave_out: set[str]) -> dict[str, str]:
    conn = sqlite3.connect(_readonly(path), uri=True)
    try:
        return {t.lower(): t for t in read_schema_sqlite(conn).tables if t.lower() not in leave_out}
    finally:
        conn.close()


def _has_rowid(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    try:
        conn.execute(f"SELECT {ROWID} FROM {schema}.{ident(table)} LIMIT 0")
        return ROWID not in lower(table_shape(conn, table, schema).columns)  # a column named rowid hides it
    except sqlite3.Error:
        return False  # WITHOUT ROWID


def _key(old: Shape, new: Shape, old_rowid: bool, new_rowid: bool) -> list[str]:
    shared = lower(old.columns) & lower(new.columns)
    for key in (old.key, new.key):
        if key and lower(key) <= shared:
            return key
    return [ROWID] if old_rowid and new_rowid else []


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _unchanged(conn: sqlite3.Connection, table: str, old: Shape, new: Shape, key: list[str]) -> list[str]:
    """The terms that hold for a row both sides have when the change left it as it was."""
    keys, before = lower(key), lower(old.columns)
    terms = [f"o.{ident(c)} IS n.{ident(c)}" for c in new.columns if c.lower() in before and c.lower() not in keys]
    defaults = {str(r[1]).lower(): r[4] for r in conn.execute(f"PRAGMA main.table_info({ident(table)})")}
    for column in new.columns:
        if column.lower() in before:
            continue
        default = defaults.get(column.lower())
        if default is None:
            terms.append(f"n.{ident(column)} IS NULL")
        elif not _VOLATILE_DEFAULT.search(str(default)):
            terms.append(f"n.{ident(column)} IS ({default})")
    return terms


def compare_table(conn: sqlite3.Connection, old_name: str, new_name: str) -> TableChange:
    """One table present on both sides (`old.` the file before, `main.` the file after)."""
    old, new = table_shape(conn, old_name, "old"), table_shape(conn, new_name, "main")
    o_table, n_table = f"old.{ident(old_name)}", f"main.{ident(new_name)}"
    before, after = _count(conn, f"SELECT count(*) FROM {o_table}"), _count(conn, f"SELECT count(*) FROM {n_table}")
    key = _key(old, new, _has_rowid(conn, "old", old_name), _has_rowid(conn, "main", new_name))
    if not key:
        return TableChange(new_name, max(0, after - before), 0, max(0, before - after), before, after, "count")
    if key == [ROWID]:
        on, how = f"n.{ROWID} = o.{ROWID}", ROWID
    else:
        on = " AND ".join(f"n.{ident(k)} IS o.{ident(k)}" for k in key)
        how = f"primary key ({', '.join(key)})"
    deleted = _count(conn, f"SELECT count(*) FROM {o_table} o WHERE NOT EXISTS (SELECT 1 FROM {n_table} n WHERE {on})")
    inserted = after - (before - deleted)  # the rows after = the ones kept + the new ones
    terms = _unchanged(conn, new_name, old, new, key)
    updated = 0
    if terms and before - deleted:
        updated = _count(
            conn, f"SELECT count(*) FROM {o_table} o JOIN {n_table} n ON {on} WHERE NOT ({' AND '.join(terms)})"
        )
    return TableChange(new_name, inserted, updated, deleted, before, after, how)


def table_changes(before: Path, after: Path, *, leave_out: Iterable[str] = ()) -> list[TableChange]:
    """Every ordinary table whose rows differ between the two files (created and dropped tables included), in
    the order of the file after, then the dropped ones. `leave_out`: tables not reported (d1ops's own)."""
    skip = lower(leave_out)
    old_tables, new_tables = _tables(before, skip), _tables(after, skip)
    conn = sqlite3.connect(_readonly(after), uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS old", (_readonly(before),))
        changes: list[TableChange] = []
        for key, name in new_tables.items():
            if key in old_tables:
                change = compare_table(conn, old_tables[key], name)
            else:
                rows = _count(conn, f"SELECT count(*) FROM main.{ident(name)}")
                change = TableChange(name, rows, 0, 0, None, rows, "created")
            if change.inserted or change.updated or change.deleted or change.rows_before is None:
                changes.append(change)
        for key, name in old_tables.items():
            if key not in new_tables:
                rows = _count(conn, f"SELECT count(*) FROM old.{ident(name)}")
                changes.append(TableChange(name, 0, 0, rows, rows, None, "dropped"))
        return changes
    finally:
        conn.close()
