"""Read-only SQL is decided by SQLite's authorizer compiling it against the project's schema (no wrangler)."""

from __future__ import annotations

import pytest

from d1ops.sql.readonly import is_read_only, scratch_schema

SCHEMA = ["CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\nCREATE VIEW v AS SELECT id FROM users;"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM users",
        "select * from v; SELECT 1;",
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3) SELECT * FROM c",
        "PRAGMA table_info(users)",
        "-- comment\nSELECT 'DELETE FROM users'",
    ],
)
def test_reads(sql: str) -> None:
    assert is_read_only(sql, scratch_schema(SCHEMA))


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM users",
        "SELECT 1; UPDATE users SET email = NULL",
        "INSERT INTO users (email) VALUES ('a') RETURNING id",
        "CREATE TABLE x (a)",
        "DROP VIEW v",
        "PRAGMA foreign_keys = OFF",
        "SELECT * FROM no_such_table",  # SQLite cannot tell here: asks like a write
        "",
    ],
)
def test_writes_and_unknowns(sql: str) -> None:
    assert not is_read_only(sql, scratch_schema(SCHEMA))
