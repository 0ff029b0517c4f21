"""What a change did to each table's rows, from two SQLite files (sql/rowchanges.py): no wrangler."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from d1ops.sql.rowchanges import table_changes


def two_files(tmp_path: Path, before: str, change: str) -> tuple[Path, Path]:
    old, new = tmp_path / "before.sqlite", tmp_path / "after.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(before)
    conn.close()
    shutil.copy(old, new)
    conn = sqlite3.connect(new)
    conn.executescript(change)
    conn.close()
    return old, new


def counts(old: Path, new: Path) -> dict[str, tuple[int, int, int, str]]:
    return {c.table: (c.inserted, c.updated, c.deleted, c.matched_by) for c in table_changes(old, new)}


def test_an_update_of_every_row_plus_three_inserts_is_not_a_net_three(tmp_path: Path) -> None:
    old, new = two_files(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20003) "
        "INSERT INTO t SELECT i, 'é' FROM c;"
        "CREATE TABLE quiet (id INTEGER PRIMARY KEY); INSERT INTO quiet VALUES (1);",
        "UPDATE t SET v = v || '!'; INSERT INTO t (v) VALUES ('a'), ('b'), ('c');",
    )
    assert counts(old, new) == {"t": (3, 20_003, 0, "primary key (id)")}  # quiet: unchanged, not listed


def test_without_rowid_tables_are_matched_by_their_primary_key(tmp_path: Path) -> None:
    old, new = two_files(
        tmp_path,
        "CREATE TABLE kv (k TEXT, part INTEGER, v INTEGER, PRIMARY KEY (k, part)) WITHOUT ROWID;"
        "INSERT INTO kv VALUES ('漢', 1, 1), ('漢', 2, 2), ('b', 1, 3), ('c', 1, 4);",
        "DELETE FROM kv WHERE k = 'c'; UPDATE kv SET v = 20 WHERE k = '漢' AND part = 2;"
        "INSERT INTO kv VALUES ('d', 1, 5);",
    )
    assert counts(old, new) == {"kv": (1, 1, 1, "primary key (k, part)")}


def test_a_rebuild_that_renumbers_rowids_keeps_rows_matched_by_the_primary_key(tmp_path: Path) -> None:
    old, new = two_files(
        tmp_path,
        "CREATE TABLE u (email TEXT PRIMARY KEY, name TEXT); INSERT INTO u VALUES ('a@x', 'A'), ('b@x', 'B');"
        "DELETE FROM u WHERE email = 'a@x'; INSERT INTO u VALUES ('a@x', 'A');",  # rowids 2, 3
        "CREATE TABLE u2 (email TEXT PRIMARY KEY, name TEXT, plan TEXT DEFAULT 'free');"
        "INSERT INTO u2 (email, name) SELECT email, name FROM u ORDER BY email;"  # rowids 1, 2
        "DROP TABLE u; ALTER TABLE u2 RENAME TO u;",
    )
    assert counts(old, new) == {}  # nothing changed in the data: the new column holds its default


def test_a_backfill_of_an_added_column_counts_as_updated_and_dropped_and_created_tables_count_whole(
    tmp_path: Path,
) -> None:
    old, new = two_files(
        tmp_path,
        "CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 2), (3, 4);"
        "CREATE TABLE gone (id INTEGER PRIMARY KEY); INSERT INTO gone VALUES (1), (2);",
        "ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 0; UPDATE t SET c = 1 WHERE a = 1;"
        "DROP TABLE gone; CREATE TABLE made (id); INSERT INTO made VALUES (1);",
    )
    assert counts(old, new) == {
        "t": (0, 1, 0, "rowid"),
        "made": (1, 0, 0, "created"),
        "gone": (0, 0, 2, "dropped"),
    }
