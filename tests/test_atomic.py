"""All-or-nothing runs: a failing batch leaves the database exactly as it was, and the failure is named from a
replay on a scratch copy; --one-by-one keeps wrangler's semantics."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Proj

EXACT = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid",
    "SELECT * FROM d1_migrations ORDER BY id",
    "SELECT * FROM d1ops_migrations ORDER BY name",
)


def exact(proj: Proj, env: str = "dev") -> list[list[tuple[Any, ...]]]:
    return [proj.query(q, env) for q in EXACT]


def five_with_a_failing_third(proj: Proj, third: str = "INSERT INTO nope (id) VALUES (1);\n") -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    proj.write("migrations/0004_seed_tags.sql", "INSERT INTO tags (name) VALUES ('a'), ('b');\n")
    proj.write("migrations/0005_broken.sql", "CREATE TABLE notes (id INTEGER PRIMARY KEY);\n" + third)
    proj.write("migrations/0006_more.sql", "CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    proj.write("migrations/0007_last.sql", "ALTER TABLE tags ADD COLUMN color TEXT;\n")


def test_a_failing_third_of_five_leaves_the_database_exactly_as_it_was(proj: Proj) -> None:
    five_with_a_failing_third(proj)
    before = exact(proj)

    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert exact(proj) == before  # sqlite_master and both tracking tables: not a byte changed
    assert proj.query("SELECT * FROM d1ops_lock") == []
    error = report["error"]
    assert error.startswith("Migration 0005_broken.sql failed on dev: no such table: nope")
    assert "statement: INSERT INTO nope (id) VALUES (1);" in error
    assert "Nothing was applied or recorded: the 5 pending migration(s) ran as one atomic batch" in error
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [
        ("0003_tags.sql", "not run"),
        ("0004_seed_tags.sql", "not run"),
        ("0005_broken.sql", "failed"),
        ("0006_more.sql", "not run"),
        ("0007_last.sql", "not run"),
    ]
    # lock + state + schema, the batch, the scratch copy (the schema: dev takes no backup), the replay up to the
    # third, and the lock's release (the batch that would have released it rolled back); after the failed batch,
    # the lock row read that tells a failing statement from a lost lease
    assert report["wrangler_processes"] == 1 + 1 + 1 + 1 + 3 + 1


def test_one_by_one_keeps_the_files_before_the_failure_applied(proj: Proj) -> None:
    five_with_a_failing_third(proj)

    result = proj.run("migrate", "dev", "--one-by-one", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [(m["name"], m["result"]) for m in report["migrations"]][:3] == [
        ("0003_tags.sql", "applied"),
        ("0004_seed_tags.sql", "applied"),
        ("0005_broken.sql", "failed"),
    ]
    assert "0003_tags.sql, 0004_seed_tags.sql applied before it, one by one" in report["error"]
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id")[2:] == [("0003_tags.sql",), ("0004_seed_tags.sql",)]
    assert "notes" not in proj.tables()  # the failing file itself is atomic
    assert proj.query("SELECT * FROM d1ops_lock") == []


def test_a_failure_that_needs_the_data_is_named_from_the_backup_just_taken(proj: Proj) -> None:
    proj.config.write_text(proj.config.read_text().replace("    backup: skip\n", "    backup: required\n", 1))
    five_with_a_failing_third(proj, third="INSERT INTO users (id, email, name) VALUES (1, 'x@example.com', 'X');\n")
    before = exact(proj)

    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert exact(proj) == before
    assert report["backup"]["verified"] is True
    assert "Migration 0005_broken.sql failed on dev: UNIQUE constraint failed: users.id" in report["error"]
    assert "statement: INSERT INTO users (id, email, name) VALUES (1, 'x@example.com', 'X');" in report["error"]


def test_a_failure_the_copy_cannot_reproduce_says_so_and_shows_wranglers_error(proj: Proj) -> None:
    # dev takes no backup, so the copy holds the schema alone: a clash with an existing row does not reproduce.
    five_with_a_failing_third(proj, third="INSERT INTO users (id, email, name) VALUES (1, 'x@example.com', 'X');\n")
    before = exact(proj)

    result = proj.run("migrate", "dev")

    assert result.exit_code == 1
    assert exact(proj) == before
    assert "The batch of 5 migration(s) failed on dev: UNIQUE constraint failed: users.id" in result.output
    assert "did not fail: the failure depends on data the copy lacks, or on dev itself" in result.output
    assert "the schema alone" in result.output


def test_the_replay_names_the_seventh_of_ten_migrations_and_its_statement(proj: Proj) -> None:
    """Each replayed step writes to the scratch copy's -wal file: the statement is found on a copy that has it."""
    proj.write(
        "migrations/0003_big.sql",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT);\n"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) "
        "INSERT INTO big SELECT i, 'value ' || i FROM c;\n",
    )
    for n in range(4, 9):
        proj.write(f"migrations/{n:04d}_t{n}.sql", f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY);\n")
    proj.write(
        "migrations/0009_broken.sql", "UPDATE big SET v = 'changed' WHERE id = 1;\nINSERT INTO nosuch VALUES (1);\n"
    )
    for n in range(10, 13):
        proj.write(f"migrations/{n:04d}_t{n}.sql", f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY);\n")
    before = exact(proj)

    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error.startswith("Migration 0009_broken.sql failed on dev: no such table: nosuch"), error
    assert "statement: INSERT INTO nosuch VALUES (1);" in error
    assert exact(proj) == before
