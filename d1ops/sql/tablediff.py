"""What an in-place restore does to one table, computed with plain sqlite3 from two databases: the backup
(`main`) and the table's current rows (`cur`). Pure functions and data; no wrangler.

Rows the backup lacks are deleted by key; every backup row is upserted (`INSERT … ON CONFLICT(pk) DO UPDATE`,
never INSERT OR REPLACE, which deletes first and so fires ON DELETE in other tables).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from d1ops.sql.schema import Shape, lower
from d1ops.sql.text import KEYS_PER_STATEMENT, ident, multi_row, row_values, sql_literal

BLOCKING_ACTIONS = ("RESTRICT", "NO ACTION")


@dataclass
class TableRestore:
    """One restored table: `rows` is what the backup holds, i.e. the table's row count after the restore."""

    name: str
    rows: int
    rows_before: int | None = None  # None: unknown, or the table did not exist
    deleted: int | None = None  # None: not counted (a whole-database restore replaces every row)
    inserted: int | None = None
    updated: int | None = None
    recreated: bool = False


@dataclass(frozen=True)
class Dependent:
    """Rows of a table outside the backup that reference rows the restore deletes (or re-keys)."""

    table: str
    parent: str
    columns: tuple[str, ...]
    event: str  # delete | update
    action: str  # CASCADE, SET NULL, SET DEFAULT, RESTRICT, NO ACTION
    rows: int

    @property
    def blocks(self) -> bool:
        return self.action in BLOCKING_ACTIONS

    def describe(self) -> str:
        verbs = {
            "CASCADE": "deleted" if self.event == "delete" else "updated",
            "SET NULL": "set to NULL",
            "SET DEFAULT": "set to their default",
        }
        what = verbs.get(self.action, "still reference them, so D1 refuses the restore")
        return (
            f"{self.table}: {self.rows} row(s) {what} "
            f"(ON {self.event.upper()} {self.action} of {self.table}({', '.join(self.columns)}) → {self.parent})"
        )


def upsert_statements(
    table: str, columns: Sequence[str], key: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Iterator[str]:
    """Multi-row `INSERT … ON CONFLICT(key) DO UPDATE` statements (plain INSERT when there is no key).

    An upsert updates a row in place: it never deletes it, so no ON DELETE action fires in other tables.
    """
    head = f"INSERT INTO {ident(table)} ({', '.join(ident(c) for c in columns)}) VALUES\n"
    others = [c for c in columns if c.lower() not in lower(key)]
    if not key:
        tail = ";\n"
    elif others:
        sets = ", ".join(f"{ident(c)} = excluded.{ident(c)}" for c in others)
        tail = f"\nON CONFLICT({', '.join(ident(k) for k in key)}) DO UPDATE SET {sets};\n"
    else:
        tail = f"\nON CONFLICT({', '.join(ident(k) for k in key)}) DO NOTHING;\n"
    yield from multi_row(head, tail, (row_values(r) for r in rows), what=f"a row of {table}")


def in_list(columns: Sequence[str]) -> str:
    """The left side of an IN list over these columns: `"c" IN (` or `("a", "b") IN (VALUES `."""
    names = [ident(c) for c in columns]
    return f"{names[0]} IN (" if len(names) == 1 else f"({', '.join(names)}) IN (VALUES "


def key_literals(key: Sequence[str], keys: Iterable[Sequence[Any]]) -> Iterator[str]:
    for k in keys:
        yield sql_literal(k[0]) if len(key) == 1 else row_values(k)


def delete_statements(table: str, key: Sequence[str], keys: Iterable[Sequence[Any]]) -> Iterator[str]:
    """`DELETE … WHERE key IN (…)` for these key values, in chunks bounded in rows and bytes."""
    yield from multi_row(
        f"DELETE FROM {ident(table)} WHERE {in_list(key)}",
        ");\n",
        key_literals(key, keys),
        max_items=KEYS_PER_STATEMENT,
        what=f"a key of {table}",
    )


@dataclass
class TablePlan:
    """How one table is restored in place, computed from the backup (main) and its current rows (cur)."""

    name: str  # as the backup spells it
    live_name: str | None  # as the database spells it; None: the table is missing and is recreated
    source: Shape
    key: list[str] = field(default_factory=list)
    deleted_keys: list[tuple[Any, ...]] | None = field(default_factory=list)  # None: delete every row (no key)
    outcome: TableRestore = field(init=False)

    @property
    def target(self) -> str:
        return self.live_name or self.name

    def _on_key(self) -> str:
        return " AND ".join(f"c.{ident(k)} = b.{ident(k)}" for k in self.key)

    def diff(self, conn: sqlite3.Connection) -> None:
        """Which rows the restore deletes, inserts and updates (into `outcome`, and the keys to delete)."""
        main, cur = f"main.{ident(self.name)}", f"cur.{ident(self.target)}"
        rows = conn.execute(f"SELECT count(*) FROM {main}").fetchone()[0]
        if not self.live_name:
            self.outcome = TableRestore(self.name, rows, None, 0, rows, 0, recreated=True)
            self.deleted_keys = [] if self.key else None
            return
        before = conn.execute(f"SELECT count(*) FROM {cur}").fetchone()[0]
        if not self.key:
            self.deleted_keys = None
            self.outcome = TableRestore(self.name, rows, before, before, rows, 0)
            return
        on = self._on_key()
        keys = ", ".join(f"c.{ident(k)}" for k in self.key)
        self.deleted_keys = conn.execute(
            f"SELECT {keys} FROM {cur} AS c WHERE NOT EXISTS (SELECT 1 FROM {main} AS b WHERE {on})"
        ).fetchall()
        inserted = conn.execute(
            f"SELECT count(*) FROM {main} AS b WHERE NOT EXISTS (SELECT 1 FROM {cur} AS c WHERE {on})"
        ).fetchone()[0]
        others = [c for c in self.source.columns if c.lower() not in lower(self.key)]
        updated = 0
        if others:
            same = " AND ".join(f"b.{ident(c)} IS c.{ident(c)} COLLATE BINARY" for c in others)
            updated = conn.execute(
                f"SELECT count(*) FROM {main} AS b JOIN {cur} AS c ON {on} WHERE NOT ({same})"
            ).fetchone()[0]
        self.outcome = TableRestore(self.name, rows, before, len(self.deleted_keys), inserted, updated)

    def vanishing(self, conn: sqlite3.Connection, refs: list[str]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """Values of `refs` (what a foreign key points at) that the restore deletes, or changes in place."""
        main, cur, on = f"main.{ident(self.name)}", f"cur.{ident(self.target)}", self._on_key()
        cols = ", ".join(f"c.{ident(r)}" for r in refs)
        not_null = " AND ".join(f"c.{ident(r)} IS NOT NULL" for r in refs)
        if self.deleted_keys:
            yield (
                "delete",
                conn.execute(
                    f"SELECT DISTINCT {cols} FROM {cur} AS c WHERE {not_null} "
                    f"AND NOT EXISTS (SELECT 1 FROM {main} AS b WHERE {on})"
                ).fetchall(),
            )
        if lower(refs) != lower(self.key):
            same = " AND ".join(f"b.{ident(r)} IS c.{ident(r)} COLLATE BINARY" for r in refs)
            yield (
                "update",
                conn.execute(
                    f"SELECT DISTINCT {cols} FROM {main} AS b JOIN {cur} AS c ON {on} WHERE {not_null} AND NOT ({same})"
                ).fetchall(),
            )
