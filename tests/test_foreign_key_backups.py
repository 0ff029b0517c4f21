"""Backups of databases with foreign keys load into D1, which enforces them: a child table created before its
parent (the key added later by ALTER TABLE … REFERENCES), and a backup of some child tables without their parents.
The quick check loads a backup as D1 does (foreign keys on, one transaction), so it fails where D1 would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from d1ops.backups.dumpfile import absent_parents, load_dump
from d1ops.project.migrations import sha256_file
from tests.conftest import Proj, make_project
from tests.test_migrate import wrangler
from tests.test_restore import rows, sql

pytestmark = pytest.mark.wrangler  # one test is pure; the rest run real wrangler

# posts is created before users, and linked to it afterwards: wrangler's export writes posts' rows before the
# CREATE TABLE of users.
CHILD_FIRST = {
    "0001_posts.sql": "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL);\n",
    "0002_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n",
    "0003_link.sql": "ALTER TABLE posts ADD COLUMN author_id INTEGER REFERENCES users(id);\n",
    "0004_rows.sql": (
        "INSERT INTO users VALUES (1, 'ada@example.com'), (2, 'alan@example.com');\n"
        "INSERT INTO posts VALUES (1, 'first', 1), (2, 'second', 2), (3, 'third', 1), (4, 'orphan-free', NULL);\n"
    ),
}


def child_first_project(root: Path) -> Proj:
    proj = make_project(root, migrations_from=None)
    for name, text in CHILD_FIRST.items():
        proj.write(f"migrations/{name}", text)
    result = proj.run("migrate", "dev")
    assert result.exit_code == 0, result.output
    return proj


def test_a_child_created_before_its_parent_backs_up_verified_full_and_restores_into_an_empty_database(
    tmp_path: Path,
) -> None:
    proj = child_first_project(tmp_path / "project")
    export = tmp_path / "export.sql"
    assert wrangler(proj.root, "d1", "export", "DB", "--local", "--output", str(export)).returncode == 0
    text = export.read_text(encoding="utf-8")
    assert text.index('INSERT INTO "posts"') < text.index("CREATE TABLE users")  # the order D1 refuses

    backup = proj.run("backup", "--verify", "full", "--json")

    assert backup.exit_code == 0, backup.output
    summary = json.loads(backup.stdout)
    assert summary["verified"] is True and summary["verify_level"] == "full"
    assert summary["tables"]["posts"] == 4 and summary["tables"]["users"] == 2
    restore = proj.run("restore", summary["path"], "--env", "staging", "--from-other-env", "--json")
    assert restore.exit_code == 0, restore.output
    for table in ("users", "posts", "d1_migrations"):
        assert rows(proj, table, "staging") == rows(proj, table, "dev")
    assert proj.query("PRAGMA foreign_key_list(posts)", "staging")[0][2] == "users"


def test_the_quick_check_refuses_a_dump_d1_refuses(tmp_path: Path) -> None:
    """wrangler's own export of that database, put in a backup: SQLite without foreign keys would load it, D1
    does not, and neither does the quick check (the full check's D1 load says the same)."""
    proj = child_first_project(tmp_path / "project")
    backup = proj.run("backup", "--json")
    assert backup.exit_code == 0, backup.output
    folder = Path(json.loads(backup.stdout)["path"])
    dump = folder / "dump.sql"
    assert wrangler(proj.root, "d1", "export", "DB", "--local", "--output", str(dump)).returncode == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = [{"name": "dump.sql", "sha256": sha256_file(dump), "size": dump.stat().st_size}]
    (folder / "manifest.json").write_text(json.dumps(manifest))

    quick = proj.run("backups", "verify", folder.name)
    assert quick.exit_code == 1
    assert "no such table: main.users" in quick.output
    full = proj.run("backups", "verify", folder.name, "--full")
    assert full.exit_code == 1
    assert "no such table: main.users" in full.output


def test_a_posts_backup_of_protected_production_verifies_full_and_restores_with_yes(proj: Proj) -> None:
    assert proj.run("promote", "--to", "staging").exit_code == 0
    promoted = proj.run("promote", "--to", "production", "--yes")
    assert promoted.exit_code == 0, promoted.output
    sql(
        proj,
        "INSERT INTO users (id, email, name) VALUES (1, 'ada@example.com', 'Ada'), (2, 'alan@example.com', 'Alan');"
        "INSERT INTO posts (id, user_id, title, slug) VALUES (1, 1, 'one', 'one'), (2, 2, 'two', 'two'), "
        "(3, 1, 'three', 'three');",
        "production",
    )
    before = rows(proj, "posts", "production")

    backup = proj.run("backup", "posts", "--env", "production", "--verify", "full", "--json")

    assert backup.exit_code == 0, backup.output
    summary = json.loads(backup.stdout)
    assert summary["verified"] is True and summary["verify_level"] == "full"
    assert summary["tables"] == {"posts": 3}
    sql(proj, "DELETE FROM posts WHERE id = 2; UPDATE posts SET title = 'changed' WHERE id = 1;", "production")

    restore = proj.run("restore", summary["path"], "--env", "production", "--yes", "--json")

    assert restore.exit_code == 0, restore.output
    report = json.loads(restore.stdout)
    assert rows(proj, "posts", "production") == before
    pre = json.loads((Path(report["pre_restore_backup"]) / "manifest.json").read_text())
    assert pre["verify_level"] == "full" and [t["name"] for t in pre["tables"]] == ["posts"]
    assert sorted(proj.query("SELECT name FROM sqlite_master WHERE type = 'table'", "production")) == sorted(
        proj.query("SELECT name FROM sqlite_master WHERE type = 'table'", "staging")
    )  # no stand-in parent table was left in production


def test_stand_ins_cover_keys_to_a_primary_key_to_unique_columns_and_composite_keys(tmp_path: Path) -> None:
    ddl = (
        "CREATE TABLE c (id INTEGER PRIMARY KEY, a INTEGER REFERENCES p, e TEXT REFERENCES q(email), "
        "x TEXT, y INTEGER, FOREIGN KEY (x, y) REFERENCES r(k1, k2))"
    )
    dump = tmp_path / "dump.sql"
    dump.write_text(
        f"PRAGMA defer_foreign_keys=TRUE;\n{ddl};\n"
        "INSERT INTO \"c\" VALUES(1,10,'a@example.com','k',1);\n"
        "INSERT INTO \"c\" VALUES(2,10,NULL,'k',NULL);\n"
        "INSERT INTO \"c\" VALUES(3,NULL,'b@example.com',NULL,2);\n",
        encoding="utf-8",
    )
    with pytest.raises(sqlite3.OperationalError, match=r"no such table: main\.[pqr]"):
        load_dump(dump, tmp_path / "without.sqlite", foreign_keys=True)

    parents = absent_parents([ddl], ["c"])
    assert sorted(parents.tables) == ["p", "q", "r"]
    db = tmp_path / "with.sqlite"
    load_dump(dump, db, foreign_keys=True, parents=parents)

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("c",)]  # the stand-ins are gone
        assert conn.execute("SELECT count(*) FROM c").fetchone() == (3,)
    finally:
        conn.close()


def test_a_backup_of_the_child_and_its_later_parent_by_name_verifies_full(tmp_path: Path) -> None:
    """`--table` exports are in creation order too, whatever order the names are given in."""
    proj = child_first_project(tmp_path / "project")

    backup = proj.run("backup", "users", "posts", "--verify", "full", "--json")

    assert backup.exit_code == 0, backup.output
    summary = json.loads(backup.stdout)
    assert summary["verify_level"] == "full" and summary["tables"] == {"users": 2, "posts": 4}
    text = (Path(summary["path"]) / "dump.sql").read_text(encoding="utf-8")
    assert text.index("CREATE TABLE users") < text.index('INSERT INTO "posts"')
