"""Is this SQL read-only? Decided by SQLite itself, not by a keyword regex.

Each statement is compiled (`EXPLAIN …`, which prepares it without running it) against a scratch in-memory
copy of the project's schema, built from its migration files, with an authorizer that notes every action
SQLite asks permission for. Only reads, selects, functions and read-only pragmas make a read-only statement
list; anything else — or anything SQLite cannot compile there — counts as a write, so it asks first.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

from d1ops.sql.text import UnfinishedStatement, code_and_text, replay_statement, split_statements

# Only these can be read-only; anything else is a write whatever it compiles to where it is judged (a
# `DROP TABLE IF EXISTS t` compiles to nothing against a schema that lacks t, and t may exist on the database).
_READ_VERBS = {"SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"}

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_READ_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "quick_check",
    "integrity_check",
    "compile_options",
    "collation_list",
    "function_list",
    "pragma_list",
}


def scratch_schema(migration_sql: Iterable[str]) -> sqlite3.Connection:
    """An in-memory database with the schema the migration files build (statements that fail are skipped)."""
    conn = sqlite3.connect(":memory:")
    for sql in migration_sql:
        try:
            statements = split_statements(sql)
        except UnfinishedStatement:  # lint reports it; the files before and after still build the schema
            continue
        for statement in statements:
            try:
                replay_statement(conn, statement)
            except sqlite3.Error:
                continue
    return conn


def is_read_only(sql: str, schema: sqlite3.Connection) -> bool:
    """True when every statement of `sql` only reads, as SQLite's authorizer sees it compiling them."""
    statements = split_statements(sql)
    if not statements:
        return False
    writes: list[int] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:  # arg2: its argument
            return sqlite3.SQLITE_OK
        writes.append(action)
        return sqlite3.SQLITE_OK

    schema.set_authorizer(authorize)
    try:
        for statement in statements:
            verb = re.match(r"[\s(]*([A-Za-z]*)", "".join(p for k, p in code_and_text(statement) if k != "comment"))
            if verb is None or verb.group(1).upper() not in _READ_VERBS:
                return False
            try:
                schema.execute("EXPLAIN " + statement.rstrip().rstrip(";"))
            except sqlite3.Error:
                return False  # SQLite cannot tell here: treat it as a write
            if writes:
                return False
    finally:
        schema.set_authorizer(None)
    return True
