"""Whole-database backups restore every schema object: tables, rows, sqlite_sequence, indexes (partial unique
ones included), FTS5 tables (external-content ones rebuilt, regular ones with their rows), views and triggers.

wrangler refuses to export a database holding virtual tables whole; d1ops then exports the tables by name and
adds the rest of the schema itself. Both paths are restored into an empty database and compared with the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from d1ops.project.project import open_projects
from tests.conftest import Proj

# Upper-case BEGIN/END: wrangler's SQL splitter closes a trigger body only on a case-sensitive `END`.
APP = """\
CREATE TABLE articles (id INTEGER PRIMARY KEY, slug TEXT NOT NULL, title TEXT, body TEXT, deleted_at TEXT);
CREATE UNIQUE INDEX articles_slug_live ON articles(slug) WHERE deleted_at IS NULL;
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
CREATE TRIGGER events_audit AFTER INSERT ON events BEGIN INSERT INTO audit(what) VALUES ('event ' || new.name); END;
CREATE VIEW live_articles AS SELECT id, title FROM articles WHERE deleted_at IS NULL;
INSERT INTO articles VALUES (1, 'hello', 'hello x', 'first body x', NULL), (2, 'jp', '日本語 x', '本文 €', NULL),
  (3, 'emoji', 'gone 😀', 'deleted x', '2026-01-01'), (4, 'emoji', 'kept 😀', 'second y', NULL),
  (7, 'z', 'z', 'x z', NULL);
INSERT INTO events (name) VALUES ('a'), ('b'), ('c'), ('d'), ('e');
DELETE FROM events WHERE id IN (2, 5);
"""

FTS = """\
CREATE VIRTUAL TABLE articles_fts USING fts5(title, body, content='articles', content_rowid='id');
INSERT INTO articles_fts(articles_fts) VALUES ('rebuild');
CREATE TRIGGER articles_ai AFTER INSERT ON articles BEGIN
  INSERT INTO articles_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
END;
CREATE TRIGGER articles_ad AFTER DELETE ON articles BEGIN
  INSERT INTO articles_fts(articles_fts, rowid, title, body) VALUES ('delete', old.id, old.title, old.body);
END;
CREATE VIRTUAL TABLE notes_fts USING fts5(body);
INSERT INTO notes_fts(rowid, body) VALUES (10, 'note x one'), (20, '中文 笔记 x'), (30, 'nothing');
"""

MATCHES = [
    "SELECT rowid FROM articles_fts WHERE articles_fts MATCH 'x' ORDER BY rowid",
    "SELECT rowid FROM articles_fts WHERE articles_fts MATCH '日本語' ORDER BY rowid",
    "SELECT rowid, highlight(notes_fts, 0, '[', ']') FROM notes_fts WHERE notes_fts MATCH 'x' ORDER BY rowid",
]


def seed(proj: Proj, sql: str) -> None:
    project = open_projects(proj.config)[0]
    path = proj.write("seed.sql", sql)
    project.wrangler.execute(project.config.env("dev"), file=path)


def objects(proj: Proj, env: str) -> set[tuple[Any, ...]]:
    rows = proj.query("SELECT type, name, sql FROM sqlite_master", env)
    return {r for r in rows if not r[1].startswith(("_cf_", "d1ops_lock", "sqlite_autoindex_d1ops_lock"))}


def contents(proj: Proj, env: str, fts: bool) -> dict[str, Any]:
    tables = ["articles", "events", "audit", "users", "sessions", "d1_migrations"] + (["notes_fts"] if fts else [])
    found: dict[str, Any] = {t: proj.query(f"SELECT * FROM {t} ORDER BY rowid", env) for t in tables}
    found["sqlite_sequence"] = sorted(proj.query("SELECT name, seq FROM sqlite_sequence", env))
    found["live_articles"] = proj.query("SELECT * FROM live_articles ORDER BY id", env)
    if fts:
        found.update({q: proj.query(q, env) for q in MATCHES})
        found["articles_fts rows"] = proj.query("SELECT count(*) FROM articles_fts", env)
    return found


@pytest.mark.parametrize(
    ("fts", "fmt"), [(True, "sql"), (True, "json"), (False, "sql")], ids=["fts-sql", "fts-json", "wrangler-whole"]
)
def test_whole_backup_restores_every_schema_object_into_an_empty_database(proj: Proj, fts: bool, fmt: str) -> None:
    seed(proj, APP + (FTS if fts else ""))
    source_objects, source = objects(proj, "dev"), contents(proj, "dev", fts)
    assert ("index", "articles_slug_live") in {o[:2] for o in source_objects}
    assert ("events", 5) in source["sqlite_sequence"]  # ids 1, 3, 4 left: the sequence keeps its gap
    if fts:
        assert source[MATCHES[0]] == [(1,), (2,), (3,), (7,)]

    backup = proj.run("backup", "--format", fmt, "--verify", "full", "--json")
    assert backup.exit_code == 0, backup.output
    summary = json.loads(backup.stdout)
    assert summary["verified"] and summary["verify_level"] == "full"
    assert summary["tables"]["articles"] == 5 and summary["tables"]["events"] == 3
    manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
    if fts:
        assert {v["name"]: (v["content"], v["rows"]) for v in manifest["virtual_tables"]} == {
            "articles_fts": ("rebuild", 5),
            "notes_fts": ("rows", 3),
        }
        assert {o["name"] for o in manifest["left_out"]} >= {"notes_fts_content", "articles_fts_data"}

    restore = proj.run("restore", summary["path"], "--env", "staging", "--from-other-env", "--json")
    assert restore.exit_code == 0, restore.output
    assert objects(proj, "staging") == source_objects
    assert contents(proj, "staging", fts) == source

    # the restored triggers, index and sequence work: a new event gets id 6 and its audit row
    project = open_projects(proj.config)[0]
    staging = project.config.env("staging")
    project.wrangler.execute(staging, command="INSERT INTO events (name) VALUES ('f')")
    assert proj.query("SELECT max(id) FROM events", "staging") == [(6,)]
    assert proj.query("SELECT what FROM audit ORDER BY id DESC LIMIT 1", "staging") == [("event f",)]


def test_whole_restore_drops_and_recreates_virtual_tables_views_and_triggers(proj: Proj) -> None:
    seed(proj, APP + FTS)
    backup = proj.run("backup", "--json")
    assert backup.exit_code == 0, backup.output
    folder = json.loads(backup.stdout)["path"]
    source_objects, source = objects(proj, "dev"), contents(proj, "dev", True)
    project = open_projects(proj.config)[0]
    project.wrangler.execute(
        project.config.env("dev"),
        command="DELETE FROM notes_fts; DROP VIEW live_articles; "
        "CREATE VIEW live_articles AS SELECT 1 AS id, 2 AS title; "
        "DROP TRIGGER events_audit; INSERT INTO articles VALUES (8, 'new', 'new x', 'x', NULL)",
    )
    restore = proj.run("restore", folder, "--env", "dev", "--json")
    assert restore.exit_code == 0, restore.output
    report = json.loads(restore.stdout)
    assert not [w for w in report["warnings"] if "virtual tables" in w]
    assert objects(proj, "dev") == source_objects
    assert contents(proj, "dev", True) == source


def test_export_of_a_whole_database_with_fts5_holds_every_object(proj: Proj) -> None:
    seed(proj, APP + FTS)
    out = proj.root / "all.sql"
    result = proj.run("export", "dev", "--output", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    for needle in (
        "CREATE UNIQUE INDEX articles_slug_live",
        "CREATE VIRTUAL TABLE notes_fts USING fts5(body)",
        'INSERT INTO "articles_fts"("articles_fts") VALUES(\'rebuild\')',
        "CREATE VIEW live_articles",
        "CREATE TRIGGER articles_ai",
    ):
        assert needle in text
    assert "notes_fts_content" not in text and text.index("CREATE TRIGGER") > text.index("CREATE VIEW")
