"""The row guard: statements that run inside a change's own atomic batch, around its SQL, and make the batch
fail when a table loses rows (or foreign-key links) that the change did not declare.

D1 runs a batch in a transaction, where `PRAGMA foreign_keys=OFF` does nothing: `DROP TABLE parent` (SQLite's
table rebuild, as drizzle-kit writes it) deletes every row of the parent first and fires ON DELETE CASCADE /
SET NULL / SET DEFAULT in every child. wrangler then says "applied". The guard counts each table's rows (and
the set links of each SET NULL / SET DEFAULT foreign key) at the batch's start, into `_d1ops_guard`, and
compares at its end. A loss makes the last guard statement raise an SQL error whose text is the message
(SQLite prints a bad JSON path in full: "JSON path error near '…'" / "bad JSON path: '…'"), so D1 rolls the
whole batch back and wrangler's error names each table, the rows lost, and the cause. No extra process.

Expected losses, decided by SQLite's authorizer while the change's statements are compiled against a copy of
the live schema: a table the change DELETEs from, DROPs or renames, a column it UPDATEs. A line
`-- d1ops: loses rows in TABLE[, TABLE…] <reason>` declares the rest.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from d1ops.project.config import Environment
from d1ops.sql.schema import DatabaseSchema, ForeignKey, lower, read_schema_sqlite
from d1ops.sql.text import ident, quote, replay_statement, split_statements

GUARD_TABLE = "_d1ops_guard"
LOST_TABLE = "_d1ops_guard_lost"
GUARD_MARK = "d1ops row guard"
# Tables whose rows the batch itself changes: the tracking tables (the release deletes the lock row).
UNGUARDED = {"d1_migrations", "d1ops_migrations", "d1ops_lock", "d1ops_schema", GUARD_TABLE, LOST_TABLE}
LOSS_ACTIONS = ("CASCADE", "SET NULL", "SET DEFAULT")
DECLARATION = re.compile(r"^\s*--\s*d1ops:\s*loses\s+rows\s+in\s+(?P<rest>.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Guarded:
    """One count the guard takes: a table's rows, or the set values of a foreign key's columns."""

    table: str
    columns: tuple[str, ...] = ()  # () for the row count
    action: str = ""  # the foreign key's ON DELETE action, for links
    default: str | None = None  # SET DEFAULT: the columns' default (SQL text)
    cause: str = ""

    @property
    def what(self) -> str:
        return "rows" if not self.columns else f"links in {', '.join(self.columns)}"

    def count_sql(self) -> str:
        table = ident(self.table)
        if not self.columns:
            return f"SELECT count(*) FROM {table}"
        if self.action == "SET DEFAULT" and self.default is not None and len(self.columns) == 1:
            return f"SELECT count(*) FROM {table} WHERE {ident(self.columns[0])} IS NOT ({self.default})"
        return f"SELECT count(*) FROM {table} WHERE " + " AND ".join(f"{ident(c)} IS NOT NULL" for c in self.columns)


@dataclass
class Effects:
    """What a change's statements do, as SQLite's authorizer saw them compiling (outside triggers)."""

    deleted: dict[str, str] = field(default_factory=dict)  # lower(table) → "DELETE FROM t" / "DROP TABLE t"
    dropped: set[str] = field(default_factory=set)
    renamed: set[str] = field(default_factory=set)
    updated: set[tuple[str, str]] = field(default_factory=set)  # (lower(table), lower(column))
    declared: dict[str, str] = field(default_factory=dict)  # lower(table) → reason
    where: dict[str, str] = field(default_factory=dict)  # lower(table) → the migration that deletes from it


@dataclass(frozen=True)
class RowGuard:
    start: list[str]
    end: list[str]
    guarded: list[Guarded]
    effects: Effects

    @property
    def start_sql(self) -> str:
        return "".join(s + ";\n" for s in self.start)

    @property
    def end_sql(self) -> str:
        return "".join(s + ";\n" for s in self.end)


def declared_losses(sql: str) -> dict[str, str]:
    """The tables `-- d1ops: loses rows in TABLE[, TABLE…] <reason>` lines name, with their reason."""
    found: dict[str, str] = {}
    for match in DECLARATION.finditer(sql):
        words = match.group("rest").split()
        tables: list[str] = []
        while words:
            word = words.pop(0)
            more = word.endswith(",")
            tables += [t.strip('"`[]') for t in word.split(",") if t]
            if not more and not (words and words[0].startswith(",")):
                break
        reason = " ".join(words).lstrip(", ")
        found.update({t.lower(): reason for t in tables})
    return found


def scratch_of(schema: DatabaseSchema) -> sqlite3.Connection:
    """An in-memory database holding this schema (no rows)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for ddl in schema.restore_ddl():
        try:
            conn.execute(ddl)
        except sqlite3.Error:
            continue  # e.g. a module the local SQLite lacks: its table is not guarded anyway
    return conn


def schema_after(schema: DatabaseSchema, sql: str) -> DatabaseSchema | None:
    """The schema once `sql` has run on `schema` (replayed in memory, no rows); None if it does not replay here."""
    conn = scratch_of(schema)
    try:
        conn.executescript(sql)
        return read_schema_sqlite(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def effects_of(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> Effects:
    """Run the migrations' statements in `conn` (a schema without rows), noting what each does to tables."""
    effects = Effects()
    current: list[str] = ["", ""]  # migration, statement
    altered: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, trigger: str | None) -> int:
        if trigger is not None or arg1 is None:
            return sqlite3.SQLITE_OK
        name = arg1.lower()
        if action == sqlite3.SQLITE_DELETE and not name.startswith("sqlite_"):
            effects.deleted.setdefault(name, f"DELETE FROM {arg1}")
            effects.where.setdefault(name, current[0])
        elif action == sqlite3.SQLITE_DROP_TABLE:
            effects.dropped.add(name)
            effects.deleted[name] = f"DROP TABLE {arg1}"
            effects.where[name] = current[0]
        elif action == sqlite3.SQLITE_ALTER_TABLE and arg2 is not None:
            altered.append(arg2)  # renamed only if its name is gone after the statement (not ADD COLUMN)
        elif action == sqlite3.SQLITE_UPDATE and arg2 is not None:
            effects.updated.add((name, arg2.lower()))
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)
    try:
        for name, sql in migrations:
            current[0] = name
            effects.declared.update(declared_losses(sql))
            for statement in split_statements(sql):
                altered.clear()
                try:
                    replay_statement(conn, statement)
                except sqlite3.Error:
                    continue  # the batch itself will report it
                for table in altered:
                    if not _exists(conn, table):
                        effects.renamed.add(table.lower())
    finally:
        conn.set_authorizer(None)
    return effects


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    """(A read: the authorizer notes nothing of it.)"""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE lower(name) = lower(?)", (table,)).fetchone() is not None


def _causes(schema: DatabaseSchema, effects: Effects) -> dict[tuple[str, str], str]:
    """(lower(child), foreign key columns) → the cause of a loss there: an ON DELETE action reached from a
    table the change deletes from, directly or through other cascades."""
    causes: dict[tuple[str, str], str] = {}
    frontier = {
        t: text + (f" in {effects.where[t]}" if effects.where.get(t) else "") for t, text in effects.deleted.items()
    }
    seen = set(frontier)
    while frontier:
        reached: dict[str, str] = {}
        for fk in schema.foreign_keys:
            parent = fk.parent.lower()
            if parent not in frontier or fk.on_delete not in LOSS_ACTIONS:
                continue
            source = frontier[parent]
            cause = f"ON DELETE {fk.on_delete} from {source}"
            causes.setdefault((fk.child.lower(), ",".join(fk.columns).lower()), cause)
            if fk.on_delete == "CASCADE" and fk.child.lower() not in seen:
                reached[fk.child.lower()] = cause
        seen |= set(reached)
        frontier = reached
    return causes


def _default_of(conn: sqlite3.Connection, table: str, column: str) -> str | None:
    try:
        rows = conn.execute(f"PRAGMA table_info({ident(table)})").fetchall()
    except sqlite3.Error:
        return None
    return next((r[4] for r in rows if str(r[1]).lower() == column.lower()), None)


def row_guard(
    schema: DatabaseSchema, migrations: Sequence[tuple[str, str]], *, honour_declarations: bool = True
) -> RowGuard:
    """The guard's statements for a batch that applies these (name, SQL) changes to a database of `schema`.

    `start` goes first in the batch (after the lease guard), `end` after the last change's SQL. Pure: it
    starts no process; the schema is the one the run read under its lock. `honour_declarations=False` watches
    the declared tables too (a rehearsal names every victim, and says which ones were declared).
    """
    conn = scratch_of(schema)
    try:
        defaults = {
            (fk.child, fk.columns[0]): _default_of(conn, fk.child, fk.columns[0])
            for fk in schema.foreign_keys
            if fk.on_delete == "SET DEFAULT" and len(fk.columns) == 1
        }
        effects = effects_of(conn, migrations)
    finally:
        conn.close()
    expected = set(effects.deleted) | effects.dropped | effects.renamed
    if honour_declarations:
        expected |= set(effects.declared)
    causes = _causes(schema, effects)
    guarded: list[Guarded] = []
    for table in schema.tables:
        key = table.lower()
        if key in lower(UNGUARDED) or key in expected:
            continue
        guarded.append(Guarded(table, cause=_row_cause(schema.foreign_keys, key, causes)))
        for fk in schema.foreign_keys:
            if fk.child.lower() != key or fk.on_delete not in ("SET NULL", "SET DEFAULT"):
                continue
            if any((key, c.lower()) in effects.updated for c in fk.columns):
                continue  # the change sets these columns itself
            guarded.append(
                Guarded(
                    table,
                    fk.columns,
                    fk.on_delete,
                    defaults.get((fk.child, fk.columns[0])) if fk.on_delete == "SET DEFAULT" else None,
                    causes.get((key, ",".join(fk.columns).lower()), ""),
                )
            )
    return RowGuard(_start(guarded), _end(guarded, [n for n, _ in migrations]), guarded, effects)


def _row_cause(fks: Sequence[ForeignKey], table: str, causes: dict[tuple[str, str], str]) -> str:
    for fk in fks:
        cause = causes.get((table, ",".join(fk.columns).lower()), "")
        if fk.child.lower() == table and fk.on_delete == "CASCADE" and cause:
            return cause
    return ""


def _start(guarded: list[Guarded]) -> list[str]:
    if not guarded:
        return []
    return [
        f"DROP TABLE IF EXISTS {ident(GUARD_TABLE)}",
        f"DROP TABLE IF EXISTS {ident(LOST_TABLE)}",
        f"CREATE TABLE {ident(GUARD_TABLE)} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        f"CREATE TABLE {ident(LOST_TABLE)} (msg TEXT NOT NULL)",
        *(f"INSERT INTO {ident(GUARD_TABLE)} VALUES ({i}, ({g.count_sql()}))" for i, g in enumerate(guarded, 1)),
    ]


def _end(guarded: list[Guarded], names: list[str]) -> list[str]:
    if not guarded:
        return []
    checks = []
    for i, g in enumerate(guarded, 1):
        cause = f" ({g.cause})" if g.cause else ""
        now = f"({g.count_sql()})"
        checks.append(
            f"INSERT INTO {ident(LOST_TABLE)} SELECT {quote(g.table + ' lost ')} || (g.n - {now}) || "
            f"{quote(' ' + g.what + cause)} FROM {ident(GUARD_TABLE)} g WHERE g.id = {i} AND {now} < g.n"
        )
    declare = "-- d1ops: loses rows in TABLE[, TABLE…] <reason>"
    head = f"{GUARD_MARK}: {', '.join(names) or 'the change'} would lose data: "
    tail = f". Nothing was applied. If the loss is intended, add the line `{declare}` to the migration."
    return [
        *checks,
        f"SELECT json_extract('{{}}', {quote('$ ' + head)} || group_concat(msg, '; ') || {quote(tail)}) "
        f"FROM {ident(LOST_TABLE)} HAVING count(*) > 0",
        f"DROP TABLE {ident(LOST_TABLE)}",
        f"DROP TABLE {ident(GUARD_TABLE)}",
    ]


@dataclass(frozen=True)
class Loss:
    """Rows (or links) a table lost that the change neither deletes nor drops itself."""

    table: str
    what: str  # "rows", or "links in account_id"
    lost: int
    cause: str  # e.g. "ON DELETE CASCADE from DROP TABLE accounts in 0003_rebuild.sql"; "" when unknown
    declared: str | None  # the reason of its `-- d1ops: loses rows in` line; None: not declared (the guard refuses)

    def describe(self) -> str:
        return f"{self.table} lost {self.lost} {self.what}" + (f" ({self.cause})" if self.cause else "")


def losses_between(guard: RowGuard, before: sqlite3.Connection, after: sqlite3.Connection) -> list[Loss]:
    """The guard's counts taken on a database before and after the change (a rehearsal's two snapshots): what
    the same counts inside the batch would find lost. Pure: two sqlite3 connections, no process."""
    losses = []
    for g in guard.guarded:
        try:
            was, now = (int(c.execute(g.count_sql()).fetchone()[0]) for c in (before, after))
        except sqlite3.Error:
            continue  # a table this SQLite cannot read (a module it lacks)
        if now < was:
            losses.append(Loss(g.table, g.what, was - now, g.cause, guard.effects.declared.get(g.table.lower())))
    return losses


def row_guard_warning(env: Environment) -> str | None:
    """What every run prints while the row guard is off for `env` (`row_guard: false`)."""
    if env.row_guard:
        return None
    return (
        f"row_guard is off for {env.name} in environments.yaml: a migration that loses rows (e.g. a table rebuild "
        "that fires ON DELETE CASCADE on D1) applies without a word. Remove `row_guard: false` to turn it back on."
    )


def guard_failure(text: str) -> str | None:
    """The guard's message out of an SQL error text (wrangler's, SQLite's), or None when it is another error."""
    at = text.find(GUARD_MARK)
    if at < 0:
        return None
    message = text[at:]
    for end in ("'\"", "': SQLITE", "'"):
        cut = message.rfind(end)
        if cut > 0 and "Nothing was applied" in message[:cut]:
            return message[:cut]
    return message
