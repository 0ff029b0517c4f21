"""Lint that knows D1, decided by SQLite itself: the migrations are replayed in an in-memory SQLite, each
statement compiled under an authorizer that records what it does (drop, delete, update, pragma), and the
foreign-key graph read with `pragma foreign_key_list` at the moment of each drop. Words inside string
literals and comments never count (rule e): only what SQLite compiles does.

Rules:
- `fk-drop` (error): DROP TABLE of a table others reference with ON DELETE CASCADE / SET NULL / SET DEFAULT.
  On D1 the drop deletes its rows first and fires those actions (PRAGMA foreign_keys=OFF does nothing in
  D1's transaction). A child the same file drops later, without copying it first, is not at risk.
- `foreign-keys-pragma` (warning): `PRAGMA foreign_keys=…` has no effect on D1 (harmless itself; `fk-drop` errs).
- `transaction-text` (warning): "BEGIN TRANSACTION" / "COMMIT;" inside a string or a comment; d1ops sends
  it protected (sql/text.py protect_transaction_text), wrangler would otherwise delete it.
- `destructive` (error, migrations only): DROP TABLE, DROP COLUMN, DELETE or UPDATE without WHERE need a line
  `-- d1ops: destructive <reason>`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from d1ops.sql.rowguard import LOSS_ACTIONS, declared_losses
from d1ops.sql.text import (
    WRANGLER_TRANSACTION,
    UnfinishedStatement,
    code_and_text,
    iter_statements,
    rows_only,
    strip_comments,
)

DESTRUCTIVE = re.compile(r"^\s*--\s*d1ops:\s*destructive\b", re.IGNORECASE | re.MULTILINE)
DESTRUCTIVE_HINT = "-- d1ops: destructive <reason>"


@dataclass(frozen=True)
class Finding:
    """Something wrong with a migration or the folder: `level` is "error" or "warning"."""

    level: str
    file: str
    message: str
    line: int | None = None
    rule: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"level": self.level, "file": self.file, "line": self.line, "rule": self.rule, "message": self.message}


@dataclass
class _Actions:
    dropped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    set_columns: set[tuple[str, str]] = field(default_factory=set)  # (lower(table), lower(column)) an UPDATE sets
    added_columns: set[tuple[str, str]] = field(default_factory=set)  # what an ALTER TABLE … ADD made
    read: set[str] = field(default_factory=set)
    altered: list[str] = field(default_factory=list)
    pragmas: list[tuple[str, str | None]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # tables (virtual ones too) this statement creates


_CREATES = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_VTABLE}


@dataclass(frozen=True)
class _Statement:
    text: str  # without its leading comments
    code: str  # its code only: string literals and comments blanked
    line: int
    actions: _Actions
    children: list[tuple[str, str]]  # a DROP TABLE: (child, ON DELETE action) at that moment


def _statements(conn: sqlite3.Connection, sql: str) -> list[_Statement]:
    """Compile then run each statement of `sql` in `conn`, recording what SQLite says it does."""
    out: list[_Statement] = []
    actions = _Actions()

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, trigger: str | None) -> int:
        if trigger is not None:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DROP_VTABLE) and arg1:  # FTS5 tables hold data too
            actions.dropped.append(arg1)
        elif action in _CREATES and arg1:
            actions.created.append(arg1)
        elif action == sqlite3.SQLITE_DELETE and arg1 and not arg1.lower().startswith("sqlite_"):
            actions.deleted.append(arg1)
        elif action == sqlite3.SQLITE_UPDATE and arg1 and not arg1.lower().startswith("sqlite_"):
            actions.updated.append(arg1)
            if arg2:
                actions.set_columns.add((arg1.lower(), arg2.lower()))
        elif action == sqlite3.SQLITE_READ and arg1:
            actions.read.add(arg1.lower())
        elif action == sqlite3.SQLITE_ALTER_TABLE and arg2:
            actions.altered.append(arg2)
        elif action == sqlite3.SQLITE_PRAGMA and arg1:
            actions.pragmas.append((arg1.lower(), arg2))
        return sqlite3.SQLITE_OK

    offset = 0
    for raw in iter_statements([sql]):
        start, offset = offset, offset + len(raw)
        text = strip_comments(raw)
        if not text or text == ";":
            continue
        lead = raw.find(text.splitlines()[0]) if text else 0
        line = sql.count("\n", 0, start + max(lead, 0)) + 1
        actions = _Actions()
        conn.set_authorizer(authorize)
        try:
            conn.execute("EXPLAIN " + text.rstrip().rstrip(";"))
        except sqlite3.Error:
            pass
        finally:
            conn.set_authorizer(None)
        children = []
        for table in actions.dropped:
            children = sorted(
                (str(r[0]), str(r[1]).upper())
                for r in conn.execute(
                    "SELECT m.name, f.on_delete FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
                    "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND m.name <> ? COLLATE NOCASE",
                    (table, table),
                )
                if str(r[1]).upper() in LOSS_ACTIONS
            )
        before = {t: _columns(conn, t) for t in actions.altered}
        try:
            if not rows_only(text):  # rows are compiled above (EXPLAIN), never generated
                conn.execute(text)
        except sqlite3.Error:
            pass  # e.g. a module this SQLite lacks; lint judges what compiles
        for table, columns in before.items():
            actions.added_columns |= {(table.lower(), c) for c in _columns(conn, table) - columns}
        code = "".join(part if kind == "code" else " " for kind, part in code_and_text(text))
        out.append(_Statement(text, code, line, actions, children))
    return out


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]).lower() for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}


def lint_history(
    migrations: Sequence[tuple[str, str]], *, judged_from: int = 0, downs: Sequence[tuple[str, str]] = ()
) -> list[Finding]:
    """Replay (name, SQL) migrations in order; judge those from index `judged_from` on (the files after the
    baseline). Down files get the transaction-text warning only (their work is to undo)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    findings: list[Finding] = []
    try:
        for index, (name, sql) in enumerate(migrations):
            try:
                statements = _statements(conn, sql)
            except UnfinishedStatement:
                break  # reported by the folder's own check (file and line); nothing after it replays
            if index >= judged_from:
                findings += _judge(name, sql, statements)
    finally:
        conn.close()
    for name, sql in downs:
        findings += _transaction_text(name, sql)
    return findings


def _judge(name: str, sql: str, statements: list[_Statement]) -> list[Finding]:
    findings = _transaction_text(name, sql)
    declared = declared_losses(sql)
    marked = bool(DESTRUCTIVE.search(sql))
    added: set[tuple[str, str]] = set()
    created: set[str] = set()  # tables this file made: dropping one of them loses nothing that was there before
    for i, st in enumerate(statements):
        added |= st.actions.added_columns
        a = st.actions
        for pragma, value in a.pragmas:
            if pragma == "foreign_keys" and value is not None:
                findings.append(
                    Finding(
                        "warning",  # harmless itself: what it fails to prevent is fk-drop's and the row guard's
                        name,
                        f"PRAGMA foreign_keys={value} has no effect on D1: D1 runs the file in a transaction, where "
                        "SQLite ignores it, so foreign keys stay on and ON DELETE actions still fire. Remove it.",
                        st.line,
                        "foreign-keys-pragma",
                    )
                )
        for table in a.dropped:
            at_risk = [
                (child, action)
                for child, action in st.children
                if child.lower() not in declared and not _dropped_later(child, statements[i + 1 :])
            ]
            if at_risk:
                findings.append(_fk_drop(name, st.line, table, at_risk))
        scratch = bool(a.dropped) and all(t.lower() in created for t in a.dropped)
        if not marked and not scratch and not (st.actions.set_columns and st.actions.set_columns <= added):
            findings += _destructive(name, st)  # (a backfill of columns this file added destroys nothing)
        created |= {t.lower() for t in a.created}
        created -= {t.lower() for t in a.dropped}
    return findings


def _dropped_later(child: str, later: list[_Statement]) -> bool:
    """The child is dropped later in the file without its rows being copied first: its rows go anyway."""
    for st in later:
        if child.lower() in (t.lower() for t in st.actions.dropped):
            return True
        if child.lower() in st.actions.read:
            return False  # copied (e.g. INSERT … SELECT in a rebuild): the copy holds what the drop emptied
    return False


def _fk_drop(name: str, line: int, table: str, children: list[tuple[str, str]]) -> Finding:
    names = ", ".join(c for c, _ in children)
    listed = "; ".join(f"{c} (ON DELETE {a})" for c, a in children)
    return Finding(
        "error",
        name,
        f"DROP TABLE {table} on D1 deletes its rows first and fires ON DELETE in {listed}: their rows "
        "(or links) are lost, PRAGMA foreign_keys=OFF notwithstanding. Safe order on D1: create and fill the new "
        f"table; rebuild {names} so they reference it (new table, copy, drop the old one, rename); only then drop "
        f"{table} (nothing references it any more) and rename the new table. Or copy {names} aside and copy them "
        f"back after. If the loss is intended: `-- d1ops: loses rows in {names} <reason>`.",
        line,
        "fk-drop",
    )


_DROP_COLUMN = re.compile(r"\bDROP\b(?!\s+(TABLE|INDEX|VIEW|TRIGGER)\b)", re.IGNORECASE)
_WHERE = re.compile(r"\bWHERE\b", re.IGNORECASE)


def _destructive(name: str, st: _Statement) -> list[Finding]:
    a = st.actions
    words = st.code.split(None, 1)
    first = words[0].upper() if words else ""
    verb = _main_verb(st.code) if first == "WITH" else first
    what = ""
    if a.dropped and verb == "DROP":
        what = f"DROP TABLE {a.dropped[0]}"
    elif a.altered and verb == "ALTER" and _DROP_COLUMN.search(st.code):
        what = f"DROP COLUMN in {a.altered[0]}"
    elif verb == "DELETE" and a.deleted and not _WHERE.search(st.code):
        what = f"DELETE FROM {a.deleted[0]} without WHERE"
    elif verb == "UPDATE" and a.updated and not _WHERE.search(st.code):
        what = f"UPDATE {a.updated[0]} without WHERE"
    if not what:
        return []
    return [
        Finding(
            "error",
            name,
            f"{what} destroys data: say why with a line `{DESTRUCTIVE_HINT}` in the migration.",
            st.line,
            "destructive",
        )
    ]


def _main_verb(code: str) -> str:
    """The verb after a WITH clause: the first DELETE/UPDATE/INSERT/SELECT at parenthesis depth 0."""
    depth = 0
    for match in re.finditer(r"[()]|\b(DELETE|UPDATE|INSERT|REPLACE|SELECT)\b", code, re.IGNORECASE):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            return token.upper()
    return ""


def _transaction_text(name: str, sql: str) -> list[Finding]:
    findings = []
    line = 1
    for kind, part in code_and_text(sql):
        if kind != "code" and (WRANGLER_TRANSACTION in part or "COMMIT;" in part.upper()):
            findings.append(
                Finding(
                    "warning",
                    name,
                    f"'BEGIN TRANSACTION' or 'COMMIT;' inside a {kind}: wrangler deletes such text from any SQL "
                    "holding 'BEGIN TRANSACTION'. d1ops sends it split ('BEGIN TRANSACT' || 'ION'), so the value "
                    "is stored as written; plain `wrangler d1 migrations apply` would change it.",
                    line,
                    "transaction-text",
                )
            )
        line += part.count("\n")
    return findings
