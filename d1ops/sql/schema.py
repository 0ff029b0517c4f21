"""What a database holds: its schema objects and foreign keys, read in one wrangler process, and the orders
they imply (parents before children; the tables a cascade can reach)."""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from d1ops.errors import UsageError
from d1ops.project.config import Environment
from d1ops.sql.text import ident
from d1ops.wrangler.runner import Statement

# Internal objects: SQLite's own, the Workers runtime's (`_cf_KV`), d1ops' scratch names.
_NOT_INTERNAL = (
    "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
    "AND name NOT LIKE '\\_d1ops\\_%' ESCAPE '\\'"
)
SCHEMA_QUERY = f"SELECT type, name, tbl_name, sql FROM sqlite_master WHERE {_NOT_INTERNAL} ORDER BY rowid"
FOREIGN_KEY_QUERY = (
    'SELECT m.name AS child, f.id AS fk, f."table" AS parent, f."from" AS col, f."to" AS ref, '
    "f.on_update AS on_update, f.on_delete AS on_delete "
    "FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
    "AND coalesce(m.sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY m.name, f.id, f.seq"
)
ORDINARY_TABLES_QUERY = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
    "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY rowid"
)
SCHEMA_READ = f"{SCHEMA_QUERY};\n{FOREIGN_KEY_QUERY};"
"""The statements that read a schema: run them alone, or appended to another batch (the lock)."""


FTS5_SHADOWS = ("data", "idx", "content", "docsize", "config")
_FTS5 = re.compile(r"^\s*CREATE\s+VIRTUAL\s+TABLE\s.*?\bUSING\s+fts5\s*\(", re.IGNORECASE | re.DOTALL)
_CONTENTLESS = re.compile(r"\bcontent\s*=\s*(''|\"\")", re.IGNORECASE)


def fts_content(sql: str, *, has_content_table: bool) -> str:
    """How the content of a virtual table is kept: `rows` (a regular FTS5 table: its rows are copied),
    `rebuild` (external-content FTS5: rebuilt from its content table after that table's rows), or `none`
    (contentless FTS5, fts5vocab: nothing to copy; the CREATE alone recreates it)."""
    if not _FTS5.match(sql):
        return "none"
    if has_content_table:
        return "rows"
    return "none" if _CONTENTLESS.search(sql) else "rebuild"


@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    tbl_name: str
    sql: str | None


@dataclass(frozen=True)
class ForeignKey:
    child: str
    parent: str
    columns: tuple[str, ...]  # in the child
    refs: tuple[str, ...] | None  # in the parent; None: the parent's primary key
    on_delete: str
    on_update: str


@dataclass(frozen=True)
class DatabaseSchema:
    objects: tuple[SchemaObject, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()

    @property
    def virtual_tables(self) -> list[str]:
        return [
            o.name for o in self.objects if o.type == "table" and (o.sql or "").upper().startswith("CREATE VIRTUAL")
        ]

    @property
    def shadow_tables(self) -> list[str]:
        """The tables FTS5 keeps for its virtual tables (`<vt>_data`, `_idx`, `_content`, `_docsize`, `_config`)."""
        shadows = {f"{v}_{s}".lower() for v in self.virtual_tables for s in FTS5_SHADOWS}
        return [o.name for o in self.objects if o.type == "table" and o.name.lower() in shadows]

    def fts_content(self, virtual: str) -> str:
        """How a virtual table's content is backed up: see `fts_content`."""
        sql = next((o.sql or "" for o in self.objects if o.name == virtual), "")
        return fts_content(sql, has_content_table=f"{virtual}_content".lower() in lower(self.shadow_tables))

    @property
    def tables(self) -> list[str]:
        """Ordinary tables: what a backup holds rows of (virtual tables and their shadow tables excluded)."""
        skip = set(self.virtual_tables) | set(self.shadow_tables)
        return [o.name for o in self.objects if o.type == "table" and o.name not in skip]

    def of_type(self, kind: str) -> list[SchemaObject]:
        return [o for o in self.objects if o.type == kind]

    def restore_ddl(self, leave_out: Iterable[str] = ()) -> list[str]:
        """Every object's CREATE, in the one order that rebuilds a database (restore, replay, adopt): ordinary
        tables, indexes, virtual tables, views, triggers (FTS5 shadow tables left out: CREATE VIRTUAL TABLE makes
        them). `leave_out`: tables left out with their indexes and triggers (d1ops's own, for adopt)."""
        virtual, shadow, out = set(self.virtual_tables), set(self.shadow_tables), set(leave_out)
        ordered = [o for o in self.objects if o.type == "table" and o.name not in virtual | shadow]
        ordered += self.of_type("index")
        ordered += [o for o in self.objects if o.name in virtual]
        ordered += self.of_type("view") + self.of_type("trigger")
        return [o.sql for o in ordered if o.sql and o.name not in out and o.tbl_name not in out]

    def left_out(self) -> list[dict[str, str]]:
        """What a whole-database backup holds no rows of, and why."""
        out = [
            {"name": t, "reason": "FTS5 shadow table: recreated by its CREATE VIRTUAL TABLE"}
            for t in self.shadow_tables
        ]
        for name in self.virtual_tables:
            if self.fts_content(name) == "none":
                out.append(
                    {"name": name, "reason": "no content of its own (contentless FTS5 or fts5vocab): recreated empty"}
                )
        return out

    def ddl_for(self, tables: list[str]) -> list[str]:
        """CREATE statements of these tables, then their indexes and triggers."""
        wanted = set(tables)
        first = [o.sql for o in self.objects if o.type == "table" and o.name in wanted and o.sql]
        rest = [o.sql for o in self.objects if o.type in ("index", "trigger") and o.tbl_name in wanted and o.sql]
        return [*first, *rest]


def schema_from(results: list[Statement]) -> DatabaseSchema:
    """The schema from the results of SCHEMA_READ's two statements (the last two of a batch)."""
    objects, fks = results[-2].results, results[-1].results
    return DatabaseSchema(
        tuple(SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), r.get("sql")) for r in objects),
        tuple(foreign_keys_from(fks)),
    )


def read_schema_sqlite(conn: sqlite3.Connection) -> DatabaseSchema:
    """The same from an SQLite database on disk (a loaded backup, a scratch copy)."""
    conn.row_factory = sqlite3.Row
    try:
        objects = [dict(r) for r in conn.execute(SCHEMA_QUERY)]
        fks = [dict(r) for r in conn.execute(FOREIGN_KEY_QUERY)]
    finally:
        conn.row_factory = None
    return DatabaseSchema(
        tuple(SchemaObject(str(r["type"]), str(r["name"]), str(r["tbl_name"]), r.get("sql")) for r in objects),
        tuple(foreign_keys_from(fks)),
    )


def foreign_keys_from(rows: Iterable[dict[str, object]]) -> list[ForeignKey]:
    """Group rows of pragma_foreign_key_list (as FOREIGN_KEY_QUERY selects them) into one entry per constraint."""
    grouped: dict[tuple[str, int], list[dict[str, object]]] = {}
    for row in rows:
        grouped.setdefault((str(row["child"]), int(row["fk"])), []).append(row)  # type: ignore[call-overload]
    return [
        ForeignKey(
            child=child,
            parent=str(parts[0]["parent"]),
            columns=tuple(str(p["col"]) for p in parts),
            refs=None if any(p["ref"] is None for p in parts) else tuple(str(p["ref"]) for p in parts),
            on_delete=str(parts[0]["on_delete"]).upper(),
            on_update=str(parts[0]["on_update"]).upper(),
        )
        for (child, _), parts in grouped.items()
    ]


def check_tables(schema: DatabaseSchema, tables: list[str], env: Environment) -> None:
    """Refuse names that are not real, backupable tables of the database (before anything runs)."""
    bad = [t for t in tables if t not in schema.tables]
    if bad:
        hints = []
        for t in bad:
            close = difflib.get_close_matches(t, schema.tables, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            kind = " is a virtual table (FTS): back up its content table instead" if t in schema.virtual_tables else ""
            hints.append(f"'{t}'{kind or hint}")
        raise UsageError(
            f"No such table in {env.name}: {', '.join(hints)}. Tables: {', '.join(schema.tables) or '(none)'}."
        )


def lower(names: Iterable[str]) -> set[str]:
    """SQLite compares table names case-insensitively."""
    return {n.lower() for n in names}


def parents_first(tables: list[str], fks: Iterable[ForeignKey]) -> list[str]:
    """`tables` ordered so that a table comes after the tables it references (cycles broken arbitrarily)."""
    by_lower = {t.lower(): t for t in tables}
    parents: dict[str, set[str]] = {t: set() for t in tables}
    for fk in fks:
        child, parent = by_lower.get(fk.child.lower()), by_lower.get(fk.parent.lower())
        if child and parent and child != parent:
            parents[child].add(parent)
    order: list[str] = []

    def visit(table: str, path: set[str]) -> None:
        if table in order or table in path:
            return
        path.add(table)
        for parent in sorted(parents[table]):
            visit(parent, path)
        order.append(table)

    for table in tables:
        visit(table, set())
    return order


def created_before_parent(tables: list[str], fks: Iterable[ForeignKey]) -> list[ForeignKey]:
    """The foreign keys between `tables` (in creation order, the order wrangler exports them in) whose child
    comes first: a key added later by ALTER TABLE … REFERENCES. An export then writes the child's rows before
    its parent table exists, and D1 (foreign keys on) refuses them: "no such table: main.<parent>"."""
    position = {t.lower(): i for i, t in enumerate(tables)}
    return [
        fk
        for fk in fks
        if fk.child.lower() in position
        and fk.parent.lower() in position
        and position[fk.child.lower()] < position[fk.parent.lower()]
    ]


def declared_foreign_keys(create_tables: Iterable[str]) -> list[ForeignKey]:
    """The foreign keys that these CREATE TABLE statements declare, as SQLite itself reads them (in memory)."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in create_tables:
            conn.execute(statement)
        return list(read_schema_sqlite(conn).foreign_keys)
    finally:
        conn.close()


def referencing(tables: list[str], fks: Iterable[ForeignKey]) -> list[str]:
    """Tables outside `tables` that reference them, directly or through each other (what a cascade can reach)."""
    fks = list(fks)
    inside = lower(tables)
    found: list[str] = []
    frontier = set(inside)
    while frontier:
        reached = {fk.child for fk in fks if fk.parent.lower() in frontier and fk.child.lower() not in inside}
        found += sorted(reached)
        inside |= lower(reached)
        frontier = lower(reached)
    return found


@dataclass(frozen=True)
class Shape:
    columns: list[str]
    key: list[str]  # primary key columns, in key order; [] when the table has none


def table_shape(conn: sqlite3.Connection, table: str, schema: str = "main") -> Shape:
    rows = conn.execute(f"PRAGMA {schema}.table_info({ident(table)})").fetchall()
    return Shape([str(r[1]) for r in rows], [str(r[1]) for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])])


def ddl_of(conn: sqlite3.Connection, table: str, types: tuple[str, ...]) -> list[str]:
    """The CREATE statements of one table's objects of these types, in creation order."""
    marks = ", ".join("?" for _ in types)
    rows = conn.execute(
        f"SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ({marks}) AND sql IS NOT NULL ORDER BY rowid",
        (table, *types),
    )
    return [str(r[0]) for r in rows]


def count_rows_sql(tables: list[str]) -> str:
    # One statement per table: D1 caps the terms of a compound SELECT (UNION ALL of 8 tables fails).
    return "\n".join(f"SELECT count(*) AS n FROM {ident(t)};" for t in tables)


def counts_from(results: list[Statement], tables: list[str]) -> dict[str, int]:
    return {t: int(s.results[0]["n"]) for t, s in zip(tables, results, strict=True)}  # type: ignore[call-overload]
