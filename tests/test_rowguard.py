"""The row guard, in Python's sqlite3 (foreign keys on, one transaction: as D1 runs a batch)."""

from __future__ import annotations

import sqlite3

import pytest

from d1ops.errors import WranglerError
from d1ops.project.project import open_projects
from d1ops.sql.rowguard import declared_losses, guard_failure, row_guard
from d1ops.sql.schema import read_schema_sqlite
from d1ops.sql.text import split_statements
from tests.conftest import Proj

PARENT_AND_CHILDREN = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE members (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE);
CREATE TABLE notes (id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(id) ON DELETE SET NULL, body TEXT);
"""
ROWS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
INSERT INTO accounts SELECT i, 'a' || i FROM n;
INSERT INTO members SELECT id, id FROM accounts;
INSERT INTO notes SELECT id, id, 'note' FROM accounts;
"""
REBUILD = """PRAGMA foreign_keys=OFF;
CREATE TABLE `__new_accounts` (`id` integer PRIMARY KEY, `name` text NOT NULL, `plan` text DEFAULT 'free');
--> statement-breakpoint
INSERT INTO `__new_accounts`("id", "name") SELECT "id", "name" FROM `accounts`;
DROP TABLE `accounts`;
ALTER TABLE `__new_accounts` RENAME TO `accounts`;
PRAGMA foreign_keys=ON;
"""


def database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(PARENT_AND_CHILDREN + ROWS)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def run_batch(conn: sqlite3.Connection, sql: str) -> None:
    """One atomic batch, as D1 runs it: BEGIN … COMMIT, rolled back on the first error."""
    schema = read_schema_sqlite(conn)
    guard = row_guard(schema, [("0003_rebuild.sql", sql)])
    conn.execute("BEGIN")
    try:
        for statement in split_statements(guard.start_sql + sql + guard.end_sql):
            conn.execute(statement)
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
    return (
        conn.execute("SELECT count(*) FROM members").fetchone()[0],
        conn.execute("SELECT count(*) FROM notes WHERE account_id IS NOT NULL").fetchone()[0],
        conn.execute("SELECT count(*) FROM accounts").fetchone()[0],
    )


def test_the_rebuild_would_empty_the_children_without_the_guard() -> None:
    conn = database()
    conn.execute("BEGIN")
    for statement in split_statements(REBUILD):
        conn.execute(statement)
    conn.execute("COMMIT")
    assert counts(conn) == (0, 0, 500)  # the trap the guard exists for


def test_guard_fails_the_rebuild_naming_children_rows_and_causes() -> None:
    conn = database()
    with pytest.raises(sqlite3.Error) as failed:
        run_batch(conn, REBUILD)
    message = guard_failure(str(failed.value))
    assert message is not None
    assert "0003_rebuild.sql" in message
    assert "members lost 500 rows (ON DELETE CASCADE from DROP TABLE accounts in 0003_rebuild.sql)" in message
    assert "notes lost 500 links in account_id (ON DELETE SET NULL from DROP TABLE accounts" in message
    assert "Nothing was applied" in message
    assert counts(conn) == (500, 500, 500)
    assert "plan" not in [r[1] for r in conn.execute("PRAGMA table_info(accounts)")]
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '_d1ops_guard%'").fetchall()


def test_declared_loss_applies() -> None:
    conn = database()
    run_batch(conn, "-- d1ops: loses rows in members, notes rebuilt on purpose\n" + REBUILD)
    assert counts(conn) == (0, 0, 500)
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '_d1ops_guard%'").fetchall()


def test_a_declaration_of_one_child_still_guards_the_other() -> None:
    conn = database()
    with pytest.raises(sqlite3.Error) as failed:
        run_batch(conn, "-- d1ops: loses rows in members members go\n" + REBUILD)
    message = guard_failure(str(failed.value)) or ""
    assert "notes lost 500 links" in message and "members lost" not in message


def test_tables_the_migration_deletes_from_or_drops_are_expected() -> None:
    conn = database()
    run_batch(conn, "DELETE FROM notes WHERE id <= 10;\nDROP TABLE members;")
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 490


def test_a_cascade_from_an_explicit_delete_of_the_parent_is_caught() -> None:
    conn = database()
    with pytest.raises(sqlite3.Error) as failed:
        run_batch(conn, "DELETE FROM accounts WHERE id <= 3;")
    message = guard_failure(str(failed.value)) or ""
    assert "members lost 3 rows (ON DELETE CASCADE from DELETE FROM accounts" in message
    assert "notes lost 3 links" in message


def test_an_update_of_the_link_column_is_expected_and_new_rows_pass() -> None:
    conn = database()
    run_batch(conn, "UPDATE notes SET account_id = NULL WHERE id < 5;\nINSERT INTO members VALUES (501, 1);")
    assert counts(conn)[:2] == (501, 496)


def test_declarations_parse_lists_and_reasons() -> None:
    assert declared_losses("-- d1ops: loses rows in a, b because\nSELECT 1;") == {"a": "because", "b": "because"}
    assert declared_losses("--d1ops: loses rows in Logs old logs go") == {"logs": "old logs go"}


def test_guard_fails_a_real_wrangler_batch_and_keeps_the_children(proj: Proj) -> None:
    """start + the rebuild + end, as one `wrangler d1 execute --local --file`: the batch fails, nothing changes."""
    project = open_projects(proj.config)[0]
    env = project.config.env("dev")
    setup = proj.write("setup.sql", PARENT_AND_CHILDREN + ROWS)
    project.wrangler.execute(env, file=setup)
    conn = sqlite3.connect(f"file:{proj.sqlite_path('dev')}?mode=ro", uri=True)
    try:
        schema = read_schema_sqlite(conn)
    finally:
        conn.close()
    guard = row_guard(schema, [("0003_rebuild.sql", REBUILD)])
    batch = proj.write("batch.sql", guard.start_sql + REBUILD + guard.end_sql)
    with pytest.raises(WranglerError) as failed:
        project.wrangler.execute(env, file=batch)
    message = guard_failure(failed.value.detail) or ""
    assert "members lost 500 rows (ON DELETE CASCADE from DROP TABLE accounts in 0003_rebuild.sql)" in message
    assert "notes lost 500 links in account_id (ON DELETE SET NULL" in message
    assert proj.query("SELECT count(*) FROM members")[0][0] == 500
    assert proj.query("SELECT count(*) FROM notes WHERE account_id IS NOT NULL")[0][0] == 500
    assert "plan" not in [r[1] for r in proj.query("PRAGMA table_info(accounts)")]
    assert not proj.query("SELECT name FROM sqlite_master WHERE name LIKE '_d1ops_guard%'")


def test_a_column_added_to_a_child_does_not_exempt_it_from_the_guard() -> None:
    """ALTER TABLE … ADD COLUMN is no rename: the child is still counted, and a cascade into it is caught."""
    conn = database()
    guard = row_guard(read_schema_sqlite(conn), [("0003_x.sql", "ALTER TABLE members ADD COLUMN role TEXT;")])
    assert "members" in {g.table for g in guard.guarded}
    with pytest.raises(sqlite3.Error) as failed:
        run_batch(conn, "ALTER TABLE members ADD COLUMN role TEXT;\nDELETE FROM accounts WHERE id <= 2;")
    assert "members lost 2 rows (ON DELETE CASCADE from DELETE FROM accounts" in (
        guard_failure(str(failed.value)) or ""
    )


def test_a_renamed_table_is_not_counted_under_its_old_name() -> None:
    conn = database()
    run_batch(conn, "ALTER TABLE notes RENAME TO old_notes;")
    assert conn.execute("SELECT count(*) FROM old_notes").fetchone()[0] == 500
