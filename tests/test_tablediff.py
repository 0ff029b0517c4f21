"""What an in-place restore does to a table, computed with plain sqlite3 (no wrangler)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from d1ops.sql.schema import table_shape
from d1ops.sql.tablediff import Dependent, TablePlan, delete_statements, upsert_statements


def databases(tmp_path: Path) -> sqlite3.Connection:
    backup, current = tmp_path / "b.sqlite", tmp_path / "c.sqlite"
    for path, rows in ((backup, [(1, "a"), (2, "b"), (3, "c")]), (current, [(2, "B"), (3, "c"), (4, "d")])):
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
        conn.commit()
        conn.close()
    conn = sqlite3.connect(backup)
    conn.execute("ATTACH DATABASE ? AS cur", (str(current),))
    return conn


def test_diff_counts_deletes_inserts_and_updates_by_key(tmp_path: Path) -> None:
    conn = databases(tmp_path)
    plan = TablePlan("t", "t", table_shape(conn, "t"), key=["id"])
    plan.diff(conn)
    assert plan.deleted_keys == [(4,)]
    assert (plan.outcome.rows, plan.outcome.rows_before) == (3, 3)
    assert (plan.outcome.inserted, plan.outcome.updated, plan.outcome.deleted) == (1, 1, 1)
    assert dict(plan.vanishing(conn, ["id"])) == {"delete": [(4,)]}


def test_the_statements_make_the_current_table_equal_the_backup(tmp_path: Path) -> None:
    conn = databases(tmp_path)
    plan = TablePlan("t", "t", table_shape(conn, "t"), key=["id"])
    plan.diff(conn)
    assert plan.deleted_keys is not None
    rows = conn.execute("SELECT id, v FROM main.t").fetchall()
    current = sqlite3.connect(tmp_path / "c.sqlite")
    for statement in [
        *delete_statements("t", ["id"], plan.deleted_keys),
        *upsert_statements("t", ["id", "v"], ["id"], rows),
    ]:
        current.execute(statement)
    assert current.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b"), (3, "c")]


def test_a_dependent_says_what_d1_does_to_its_rows() -> None:
    assert Dependent("posts", "users", ("user_id",), "delete", "RESTRICT", 2).blocks
    assert Dependent("sessions", "users", ("user_id",), "delete", "CASCADE", 1).describe() == (
        "sessions: 1 row(s) deleted (ON DELETE CASCADE of sessions(user_id) → users)"
    )
