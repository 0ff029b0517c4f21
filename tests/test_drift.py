"""Drift between what the applied migrations make and what the database has."""

from __future__ import annotations

import json
from pathlib import Path

from d1ops.project.project import open_projects
from d1ops.sql.drift import CHANGED, EXTRA, MISSING, check_drift, expected_schema, replay_schema
from d1ops.sql.schema import DatabaseSchema, SchemaObject
from tests.conftest import Proj

HISTORY = [
    ("0001.sql", "c1", "CREATE TABLE a (id INTEGER PRIMARY KEY,\n   name TEXT);\nCREATE INDEX a_name ON a(name);\n"),
    ("0002.sql", "c2", "CREATE VIRTUAL TABLE docs USING fts5(body);\nINSERT INTO a VALUES (1, 'x');\n"),
]


def live(*objects: tuple[str, str, str, str | None]) -> DatabaseSchema:
    return DatabaseSchema(tuple(SchemaObject(*o) for o in objects))


def test_same_schema_with_other_whitespace_and_tracking_tables_is_no_drift() -> None:
    expected = replay_schema([(n, s) for n, _, s in HISTORY])
    assert expected is not None
    objects = [(o.type, o.name, o.tbl_name, o.sql) for o in expected.objects]
    objects[0] = (objects[0][0], objects[0][1], objects[0][2], "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT)")
    objects += [
        ("table", "d1_migrations", "d1_migrations", "CREATE TABLE d1_migrations (id)"),
        ("table", "d1ops_lock", "d1ops_lock", "CREATE TABLE d1ops_lock (id)"),
        ("table", "_cf_METADATA", "_cf_METADATA", "CREATE TABLE _cf_METADATA (k)"),
    ]
    assert check_drift(expected, live(*objects)) == []
    assert {o.name for o in expected.objects} >= {"docs_data", "docs_config"}  # shadow tables: not compared


def test_missing_extra_and_changed_objects_carry_both_texts() -> None:
    expected = replay_schema([(n, s) for n, _, s in HISTORY[:1]])
    assert expected is not None
    found = check_drift(
        expected,
        live(
            ("table", "a", "a", "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT, extra INT)"),
            ("index", "by_hand", "a", "CREATE INDEX by_hand ON a(id)"),
        ),
    )
    assert [(d.kind, d.type, d.name) for d in found] == [
        (CHANGED, "table", "a"),
        (MISSING, "index", "a_name"),
        (EXTRA, "index", "by_hand"),
    ]
    assert found[0].expected_sql == "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT)"
    assert found[0].live_sql == "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT, extra INT)"
    assert "extra index by_hand" in found[2].describe()


def test_a_history_that_does_not_replay_has_no_expected_schema_and_replays_are_cached(tmp_path: Path) -> None:
    assert replay_schema([("0001.sql", "CREATE VIRTUAL TABLE v USING nosuchmodule(x);")]) is None
    first = expected_schema(HISTORY, tmp_path)
    assert first is not None and len(list(tmp_path.glob("schema-*.json"))) == 1
    cached = next(tmp_path.glob("schema-*.json"))
    data = json.loads(cached.read_text())
    data.append({"type": "index", "name": "from_cache", "tbl_name": "a", "sql": "CREATE INDEX from_cache ON a(id)"})
    cached.write_text(json.dumps(data))
    again = expected_schema(HISTORY, tmp_path)
    assert again is not None and "from_cache" in [o.name for o in again.objects]  # read, not replayed
    assert expected_schema(HISTORY[:1], tmp_path) != again  # other checksums: another entry


def test_an_index_made_by_hand_in_staging_shows_in_status_and_check_exits_3(proj: Proj) -> None:
    migrated = proj.run("migrate", "staging")
    assert migrated.exit_code == 0, migrated.output
    clean = proj.run("status", "staging", "--check")
    assert clean.exit_code == 0, clean.output
    project = open_projects(proj.config)[0]
    project.wrangler.execute(project.config.env("staging"), command="CREATE INDEX by_hand ON users(created_at)")

    shown = proj.run("status", "staging")
    assert shown.exit_code == 0, shown.output
    assert "staging: 2 applied, 0 pending, 1 schema object(s) drifted." in shown.output
    assert "drift: extra index by_hand (not made by any migration): `CREATE INDEX by_hand ON users(created_at)`" in (
        shown.output
    )
    check = proj.run("status", "staging", "--check", "--json")
    assert check.exit_code == 3
    drift = json.loads(check.stdout)["schema_drift"]["staging"]
    assert drift == [
        {
            "kind": "extra",
            "type": "index",
            "name": "by_hand",
            "expected_sql": None,
            "live_sql": "CREATE INDEX by_hand ON users(created_at)",
        }
    ]


def test_promote_refuses_a_target_with_a_hand_made_index_unless_drift_is_accepted(proj: Proj) -> None:
    project = open_projects(proj.config)[0]
    assert proj.run("migrate", "staging").exit_code == 0
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    proj.write("migrations/down/0003_tags.sql", "DROP TABLE tags;\n")
    assert proj.run("migrate", "dev").exit_code == 0  # dev now has 0003, staging lacks it
    project.wrangler.execute(project.config.env("staging"), command="CREATE INDEX by_hand ON users(created_at)")

    refused = proj.run("promote", "--to", "staging")
    assert refused.exit_code == 1
    assert "staging's schema is not what its applied migrations make (drift):" in refused.output
    assert "extra index by_hand" in refused.output
    assert proj.query("SELECT name FROM sqlite_master WHERE name = 'tags'", "staging") == []

    accepted = proj.run("promote", "--to", "staging", "--accept-drift", "--json")
    assert accepted.exit_code == 0, accepted.output
    report = json.loads(accepted.stdout)
    assert report["schema_drift"]["accepted"] is True
    assert [o["name"] for o in report["schema_drift"]["objects"]] == ["by_hand"]
    assert proj.query("SELECT name FROM sqlite_master WHERE name = 'tags'", "staging") == [("tags",)]


def test_diff_compares_two_environments_live_schemas(proj: Proj) -> None:
    project = open_projects(proj.config)[0]
    project.wrangler.execute(project.config.env("staging"), command="CREATE TABLE only_staging (id INTEGER)")
    result = proj.run("diff", "dev", "staging", "--check")
    assert result.exit_code == 3, result.output
    assert "only in staging: table only_staging\n  staging: CREATE TABLE only_staging (id INTEGER)" in result.output
    assert "only in dev: table users" in result.output
    same = proj.run("diff", "dev", "dev")
    assert same.exit_code == 2
