"""`d1ops rollback` against the real wrangler and real local D1 databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Proj

SCHEMA = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '_cf%' ORDER BY name"
TRACKING = ("SELECT name FROM d1_migrations ORDER BY id", "SELECT name, checksum FROM d1ops_migrations ORDER BY name")


def state(proj: Proj, env: str = "dev") -> dict[str, Any]:
    """Everything a rollback may change: the schema, both tracking tables, and the rows of the app's tables."""
    data: dict[str, Any] = {"schema": proj.query(SCHEMA, env)}
    for query in TRACKING:
        data[query] = proj.query(query, env)
    for table in sorted(proj.tables(env)):
        data[table] = sorted(proj.query(f'SELECT * FROM "{table}"', env), key=repr)
    return data


def add(proj: Proj, name: str, up: str, down: str | None) -> None:
    proj.write(f"migrations/{name}", up)
    if down is not None:
        proj.write(f"migrations/down/{name}", down)


def three_more(proj: Proj) -> None:
    add(proj, "0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n", "DROP TABLE tags;\n")
    add(
        proj,
        "0004_post_tags.sql",
        "CREATE TABLE post_tags (post_id INTEGER REFERENCES posts(id), tag_id INTEGER REFERENCES tags(id));\n"
        "CREATE INDEX idx_post_tags_tag ON post_tags(tag_id);\n",
        "DROP INDEX idx_post_tags_tag;\nDROP TABLE post_tags;\n",
    )
    add(
        proj,
        "0005_users_bio.sql",
        "ALTER TABLE users ADD COLUMN bio TEXT;\nUPDATE users SET bio = 'hi';\n",
        "ALTER TABLE users DROP COLUMN bio;\n",
    )


def test_rollback_of_the_last_migration_then_migrate_again_gives_the_same_database(proj: Proj) -> None:
    before = state(proj)

    result = proj.run("rollback", "dev", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["plan"] == ["0002_sample_data.sql"]
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [("0002_sample_data.sql", "rolled back")]
    assert proj.query("SELECT name FROM d1_migrations") == [("0001_initial_schema.sql",)]
    assert proj.query("SELECT count(*) FROM users") == [(0,)]
    assert proj.query("SELECT * FROM d1ops_lock") == []
    assert Path(report["report_path"]).is_file()

    again = proj.run("migrate", "dev")

    assert again.exit_code == 0, again.output
    after = state(proj)
    assert after["schema"] == before["schema"]  # sqlite_master: identical
    assert [after[q] for q in TRACKING][0] == [before[q] for q in TRACKING][0]
    # the sample rows are back; AUTOINCREMENT tables give them new ids, as SQLite always does
    assert {t: len(after[t]) for t in proj.tables()} == {t: len(before[t]) for t in proj.tables()}


def test_rollback_of_three_undoes_them_newest_first_in_one_batch(proj: Proj) -> None:
    before = state(proj)
    three_more(proj)
    assert proj.run("migrate", "dev").exit_code == 0

    dry = proj.run("rollback", "dev", "--steps", "3", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "0005_users_bio.sql\n  0004_post_tags.sql\n  0003_tags.sql" in dry.output
    assert "tags" in proj.tables()

    result = proj.run("rollback", "dev", "--to", "0002_sample_data.sql", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["plan"] == ["0005_users_bio.sql", "0004_post_tags.sql", "0003_tags.sql"]
    # dev's lock + state + schema (1), staging and production read for the gate (never tracked: 2 each), the batch
    assert report["wrangler_processes"] == 6
    assert state(proj) == before


def test_rollback_goes_in_reverse_promotion_order(proj: Proj) -> None:
    three_more(proj)
    assert proj.run("migrate", "dev").exit_code == 0
    assert proj.run("promote", "--to", "staging").exit_code == 0
    before = state(proj)

    result = proj.run("rollback", "dev")

    assert result.exit_code == 1
    assert "Rollbacks go in reverse promotion order (production → staging → dev): staging still has " in result.output
    assert "0005_users_bio.sql. Roll it back there first: `d1ops rollback staging --to 0004_post_tags.sql`" in (
        result.output
    )
    assert state(proj) == before
    assert proj.run("rollback", "staging").exit_code == 0
    assert proj.run("rollback", "dev").exit_code == 0
    assert "bio" not in {r[1] for r in proj.query("PRAGMA table_info(users)")}


def test_an_irreversible_migration_stops_the_rollback_before_anything_runs(proj: Proj) -> None:
    config = proj.config.read_text().replace("    backup: skip\n", "    backup: optional\n", 1)
    proj.config.write_text(config)
    add(proj, "0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n", "-- d1ops: irreversible drops tags\n")
    add(proj, "0004_more.sql", "CREATE TABLE more (id INTEGER PRIMARY KEY);\n", "DROP TABLE more;\n")
    migrated = proj.run("migrate", "dev", "--json")
    assert migrated.exit_code == 0, migrated.output
    backup = json.loads(migrated.stdout)["backup"]["path"]
    before = state(proj)

    result = proj.run("rollback", "dev", "--steps", "2")

    assert result.exit_code == 1
    assert "0003_tags.sql cannot be rolled back: its down file says it is irreversible: drops tags." in result.output
    assert "Nothing was changed." in result.output
    assert f"`d1ops restore {backup} --env dev`" in result.output
    assert state(proj) == before

    Path(proj.migrations / "down" / "0004_more.sql").unlink()
    result = proj.run("rollback", "dev")
    assert result.exit_code == 1
    assert "0004_more.sql cannot be rolled back: it has no down file (down/0004_more.sql)" in result.output
    assert state(proj) == before


def test_a_failing_down_file_changes_nothing_and_is_named(proj: Proj) -> None:
    add(proj, "0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n", "DROP TABLE tagz;\n")
    add(proj, "0004_more.sql", "CREATE TABLE more (id INTEGER PRIMARY KEY);\n", "DROP TABLE more;\n")
    assert proj.run("migrate", "dev").exit_code == 0
    before = state(proj)

    result = proj.run("rollback", "dev", "--steps", "2", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert "The down file of 0003_tags.sql failed on dev: no such table: tagz" in report["error"]
    assert "statement: DROP TABLE tagz;" in report["error"]
    assert "Nothing was rolled back" in report["error"]
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [
        ("0004_more.sql", "not run"),
        ("0003_tags.sql", "failed"),
    ]
    assert state(proj) == before  # 0004's down ran first in the batch, and was rolled back with it
    assert proj.query("SELECT * FROM d1ops_lock") == []


def test_rollback_refuses_an_unknown_to_name(proj: Proj) -> None:
    result = proj.run("rollback", "dev", "--to", "0001_initial_schema")
    assert result.exit_code == 2
    assert "--to 0001_initial_schema: not a migration applied to dev (did you mean '0001_initial_schema.sql'?)" in (
        result.output
    )
    assert proj.query("SELECT * FROM d1ops_lock") == []
