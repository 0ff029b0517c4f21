"""`d1ops restore` against the real wrangler and real local D1 databases (each wrangler process costs ~1 s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import Proj

APP_TABLES = ("users", "sessions", "api_keys", "posts", "audit_logs", "settings")


def sql(proj: Proj, command: str, env: str = "dev") -> None:
    """Change a database behind d1ops' back, the way an application (or a mistake) would (conftest's Proj.sql)."""
    proj.sql(command, env)


def rows(proj: Proj, table: str, env: str = "dev") -> list[tuple[Any, ...]]:
    """Every row of a table, with the storage type of each value, in a stable order."""
    columns = [r[1] for r in proj.query(f'PRAGMA table_info("{table}")', env)]
    typed = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
    return sorted(proj.query(f'SELECT {typed} FROM "{table}"', env), key=repr)


def snapshot(proj: Proj, tables: tuple[str, ...] | set[str], env: str = "dev") -> dict[str, list[tuple[Any, ...]]]:
    return {t: rows(proj, t, env) for t in sorted(tables)}


def take_backup(proj: Proj, *args: str) -> Path:
    result = proj.run("backup", *args, "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["path"])


def restore(proj: Proj, *args: str) -> tuple[int, Any, str]:
    """Run `d1ops restore … --json`: exit code, the JSON document, stderr."""
    result = proj.run("restore", *args, "--json")
    return result.exit_code, json.loads(result.stdout), result.stderr


def all_tables(proj: Proj, env: str = "dev") -> set[str]:
    """Every ordinary table, tracking tables included (the lock table left out)."""
    rows = proj.query("SELECT name FROM sqlite_master WHERE type = 'table'", env)
    return {r[0] for r in rows if not r[0].startswith(("sqlite_", "_cf_")) and r[0] != "d1ops_lock"}


def lock_rows(proj: Proj, env: str = "dev") -> list[tuple[Any, ...]]:
    """Rows of d1ops' lock table (none when the table is absent, e.g. after restoring a JSON backup)."""
    if not proj.query("SELECT 1 FROM sqlite_master WHERE name = 'd1ops_lock'", env):
        return []
    return proj.query("SELECT * FROM d1ops_lock", env)


def test_restore_users_in_place_leaves_referencing_rows_untouched(proj: Proj) -> None:
    folder = take_backup(proj, "users", "--env", "dev", "--format", "json")
    users = rows(proj, "users")
    # After the backup: one user edited, one deleted (its email then taken by a new user: a UNIQUE value that
    # moved between ids). sessions, api_keys and posts hold rows that reference users 1-3.
    sql(
        proj,
        "UPDATE users SET name = 'Ada (edited)' WHERE id = 1; DELETE FROM users WHERE id = 4; "
        "INSERT INTO users (id, email, name) VALUES (5, 'edsger@example.com', 'Not Edsger')",
    )
    others = snapshot(proj, set(APP_TABLES) - {"users"})
    assert others["sessions"] and others["api_keys"] and others["posts"]

    code, report, stderr = restore(proj, str(folder), "--env", "dev")

    assert code == 0, stderr
    assert rows(proj, "users") == users
    assert snapshot(proj, set(APP_TABLES) - {"users"}) == others  # not one referencing row touched
    assert report["mode"] == "tables"
    assert report["tables"] == [
        {
            "name": "users",
            "rows": 4,
            "rows_before": 4,
            "deleted": 1,
            "inserted": 1,
            "updated": 1,
            "recreated": False,
        }
    ]
    assert report["dependents"] == []
    # lock + state + schema and foreign keys, the plan's export of users (the pre-restore backup keeps it as its
    # dump: rows counted in it), count of rows referencing the deleted user 5 (none), the batch
    assert report["wrangler_processes"] == 4
    pre = Path(report["pre_restore_backup"])
    assert json.loads((pre / "manifest.json").read_text())["tables"] == [{"name": "users", "rows": 4}]
    assert json.loads(Path(report["report_path"]).read_text())["command"] == "restore"
    assert lock_rows(proj) == []


def test_restore_refuses_to_cascade_into_other_tables_unless_allowed(proj: Proj) -> None:
    folder = take_backup(proj, "users", "--env", "dev")
    users = rows(proj, "users")
    sql(
        proj,
        "INSERT INTO users (id, email, name) VALUES (6, 'new@example.com', 'New');"
        "UPDATE users SET name = 'Grace (edited)' WHERE id = 2;"
        "INSERT INTO sessions (id, user_id, expires_at) VALUES ('sess_new', 6, '2030-01-01');"
        "INSERT INTO api_keys (id, user_id, key_hash, name) VALUES (9, 6, 'sha256:new', 'New key');"
        "INSERT INTO audit_logs (id, user_id, action) VALUES (99, 6, 'user.login');"
        "INSERT INTO posts (id, user_id, title, slug) VALUES (9, 6, 'New post', 'new-post')",
    )
    before = snapshot(proj, APP_TABLES)

    code, report, stderr = restore(proj, str(folder), "--env", "dev")

    assert code == 1
    assert "would change rows of tables outside the backup" in stderr
    for line in (
        "posts: 1 row(s) still reference them, so D1 refuses the restore "
        "(ON DELETE RESTRICT of posts(user_id) → users)",
        "sessions: 1 row(s) deleted (ON DELETE CASCADE of sessions(user_id) → users)",
        "api_keys: 1 row(s) deleted (ON DELETE CASCADE of api_keys(user_id) → users)",
        "audit_logs: 1 row(s) set to NULL (ON DELETE SET NULL of audit_logs(user_id) → users)",
    ):
        assert line in stderr
    assert "Nothing was changed." in stderr and "--allow-cascade cannot override RESTRICT" in stderr
    assert report["exit_code"] == 1
    assert report["pre_restore_backup"] is None  # refused by the plan, before the pre-restore backup
    assert snapshot(proj, APP_TABLES) == before
    assert lock_rows(proj) == []

    sql(proj, "DELETE FROM posts WHERE id = 9")
    before = snapshot(proj, APP_TABLES)
    backups = sorted((proj.root / "backups" / "dev").iterdir())
    dry = proj.run("restore", str(folder), "--env", "dev", "--allow-cascade", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert f"Would restore 1 table(s), in place, of dev from {folder}, taken from dev at " in dry.stdout
    assert "  users  4     5       0         1        1" in dry.stdout  # rows, before, inserted, updated, deleted
    assert "  sessions: 1 row(s) deleted (ON DELETE CASCADE of sessions(user_id) → users)" in dry.stdout
    assert "A verified pre-restore backup would be taken first." in dry.stdout
    assert snapshot(proj, APP_TABLES) == before
    assert sorted((proj.root / "backups" / "dev").iterdir()) == backups  # no backup, no report

    code, report, stderr = restore(proj, str(folder), "--env", "dev", "--allow-cascade")

    assert code == 0, stderr
    assert rows(proj, "users") == users
    after = snapshot(proj, APP_TABLES)
    assert after["sessions"] == [r for r in before["sessions"] if r[0] != "sess_new"]
    assert after["api_keys"] == [r for r in before["api_keys"] if r[0] != 9]
    assert proj.query("SELECT user_id FROM audit_logs WHERE id = 99") == [(None,)]
    assert [r for r in after["audit_logs"] if r[0] != 99] == [r for r in before["audit_logs"] if r[0] != 99]
    assert after["posts"] == [r for r in before["posts"] if r[0] != 9]
    assert after["settings"] == before["settings"]
    assert {(d["table"], d["action"], d["rows"]) for d in report["dependents"]} == {
        ("sessions", "CASCADE", 1),
        ("api_keys", "CASCADE", 1),
        ("audit_logs", "SET NULL", 1),
    }
    assert report["tables"][0]["deleted"] == 1 and report["tables"][0]["updated"] == 1
    # With --allow-cascade the pre-restore backup also holds the tables that reference users: undo is possible.
    manifest = json.loads((Path(report["pre_restore_backup"]) / "manifest.json").read_text())
    assert {t["name"] for t in manifest["tables"]} == {"users", "sessions", "api_keys", "posts", "audit_logs"}
    assert lock_rows(proj) == []


def test_a_restore_plans_its_rows_and_its_cascade_refusal_before_the_confirmation(proj: Proj) -> None:
    from d1ops.changes.restore import restore_backup
    from d1ops.errors import GateRefused
    from d1ops.project.project import open_projects
    from d1ops.run.sequence import RunFailed

    config = proj.config.read_text(encoding="utf-8")
    proj.config.write_text(config.replace("    backup: skip\n", "    backup: skip\n    protected: true\n", 1))
    folder = take_backup(proj, "users", "--env", "dev")
    users = rows(proj, "users")
    # Gains user 4 back, changes user 1, loses user 5, whose session the restore's delete would cascade into.
    sql(
        proj,
        "UPDATE users SET name = 'Ada (edited)' WHERE id = 1; DELETE FROM users WHERE id = 4; "
        "INSERT INTO users (id, email, name) VALUES (5, 'new@example.com', 'New');"
        "INSERT INTO sessions (id, user_id, expires_at) VALUES ('sess_new', 5, '2030-01-01')",
    )
    before = snapshot(proj, APP_TABLES)
    project = open_projects(proj.config)[0]
    shown: list[str] = []

    def confirm(env: Any, description: str) -> None:
        shown.append(description)
        raise GateRefused("Confirmation did not match 'dev': nothing was changed.")

    def restore_dev() -> Any:
        return restore_backup(
            project, folder, "dev", from_other_env=False, allow_cascade=False, dry_run=False, confirm=confirm
        )

    with pytest.raises(RunFailed) as refused:
        restore_dev()
    assert "sessions: 1 row(s) deleted (ON DELETE CASCADE of sessions(user_id) → users)" in refused.value.message
    assert shown == []  # refused by the plan: nobody was asked
    # lock + state + schema, the export, the dependent rows, the release
    assert refused.value.report.wrangler_processes == 4
    assert snapshot(proj, APP_TABLES) == before
    assert [p.name for p in (proj.root / "backups" / "dev").iterdir() if p.name != "reports"] == [folder.name]

    sql(proj, "DELETE FROM sessions WHERE id = 'sess_new'")
    before = snapshot(proj, APP_TABLES)
    with pytest.raises(RunFailed) as declined:
        restore_dev()
    assert "Confirmation did not match" in declined.value.message
    assert shown == [
        f"Restore 1 table(s) of dev in place from backup {folder} (taken from dev at "
        f"{json.loads((folder / 'manifest.json').read_text())['started_at']}); the rows each table gains "
        "(INSERTED), changes (UPDATED) and loses (DELETED):\n"
        "  TABLE  ROWS  BEFORE  INSERTED  UPDATED  DELETED\n"
        "  users  4     4       1         1        1\n"
        "No row of another table changes.\n"
        "A verified pre-restore backup is taken first."
    ]
    assert snapshot(proj, APP_TABLES) == before and rows(proj, "users") != users
    assert [p.name for p in (proj.root / "backups" / "dev").iterdir() if p.name != "reports"] == [folder.name]
    assert lock_rows(proj) == []


def test_backup_drop_restore_gives_back_every_row_of_a_big_table(proj: Proj) -> None:
    # through wrangler: the REAL values below are the doubles D1's parser makes of these literals (Python's sqlite3
    # parses -1.5e-300 to a neighbouring double, which does not survive D1's export and import exactly)
    proj.wrangler_sql(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, name TEXT, v REAL, b BLOB);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<100000) "
        "INSERT INTO big SELECT i, 'row '||i, i*0.5, NULL FROM c;"
        # values that need careful literals: quotes, a semicolon, a newline, a real, a blob, NULL
        "UPDATE big SET name = 'it''s; a' || char(10) || 'newline -- x', v = 0.1 + 0.2, b = X'00FF10' WHERE id = 7;"
        "UPDATE big SET name = NULL, v = -1.5e-300 WHERE id = 8",
    )
    expected = rows(proj, "big")
    assert len(expected) == 100_000
    folder = take_backup(proj, "big", "--env", "dev")
    sql(proj, "DROP TABLE big")

    code, report, stderr = restore(proj, str(folder), "--env", "dev")

    assert code == 0, stderr
    assert rows(proj, "big") == expected
    assert report["tables"][0]["recreated"] is True
    assert report["pre_restore_backup"] is None  # nothing of big existed to back up
    assert report["wrangler_processes"] == 2  # lock + state + schema, the batch
    assert lock_rows(proj) == []


@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_whole_database_restore_round_trip(proj: Proj, fmt: str) -> None:
    folder = take_backup(proj, "--env", "dev", "--format", fmt)
    tables = all_tables(proj)
    expected = snapshot(proj, tables)
    assert {"d1_migrations", "d1ops_migrations", *APP_TABLES} <= tables
    sql(
        proj,
        "DROP TABLE settings; DELETE FROM sessions; DELETE FROM posts WHERE id = 3; DELETE FROM users WHERE id = 3",
    )
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    refused = proj.run("migrate", "dev")  # settings was dropped by hand: dev has drifted from its migrations
    assert refused.exit_code == 1 and "settings" in refused.output, refused.output
    assert proj.run("migrate", "dev", "--accept-drift").exit_code == 0
    assert "tags" in proj.tables("dev")

    code, report, stderr = restore(proj, str(folder), "--env", "dev")

    assert code == 0, stderr
    assert all_tables(proj) == tables
    assert snapshot(proj, tables) == expected  # every row of every table, d1_migrations included
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id") == [
        ("0001_initial_schema.sql",),
        ("0002_sample_data.sql",),
    ]
    assert report["mode"] == "database"
    assert report["dropped_tables"] == ["tags"]
    assert {t["name"]: (t["rows"], t["rows_before"]) for t in report["tables"]}["sessions"] == (3, 0)
    # lock + state + schema, the pre-restore backup's export (rows counted in the dump), the batch
    assert report["wrangler_processes"] == 3
    assert lock_rows(proj) == []


def test_a_whole_restore_shows_each_tables_rows_now_and_after_before_the_confirmation(proj: Proj) -> None:
    from d1ops.changes.restore import restore_backup
    from d1ops.errors import GateRefused
    from d1ops.project.project import open_projects
    from d1ops.run.sequence import RunFailed

    config = proj.config.read_text(encoding="utf-8")
    proj.config.write_text(config.replace("    backup: skip\n", "    backup: skip\n    protected: true\n", 1))
    folder = take_backup(proj, "--env", "dev")
    users = proj.query("SELECT count(*) FROM users")[0][0]
    sql(
        proj,
        "DELETE FROM sessions; CREATE TABLE scratch_notes (id INTEGER PRIMARY KEY); "
        "INSERT INTO scratch_notes DEFAULT VALUES",
    )
    before = snapshot(proj, APP_TABLES)
    shown: list[str] = []

    def confirm(env: Any, description: str) -> None:
        shown.append(description)
        raise GateRefused("Confirmation did not match 'dev': nothing was changed.")

    with pytest.raises(RunFailed) as refused:
        restore_backup(
            open_projects(proj.config)[0],
            folder,
            "dev",
            from_other_env=False,
            allow_cascade=False,
            dry_run=False,
            confirm=confirm,
        )
    assert "nothing was changed" in refused.value.message
    [text] = shown
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  ")}
    # TABLE ROWS BEFORE INSERTED UPDATED DELETED: dropped and recreated, each loses what it has and gains the backup's
    assert lines["sessions"] == ["3", "0", "3", "-", "0"]
    assert lines["users"] == [str(users), str(users), str(users), "-", str(users)]
    assert lines["scratch_notes"] == ["0", "1", "0", "-", "1"]  # the backup lacks it: dropped
    assert "tables the backup lacks are dropped: scratch_notes" in text
    assert refused.value.report.wrangler_processes == 3  # lock + state + schema, the row counts, the release
    assert snapshot(proj, APP_TABLES) == before


def test_restore_refuses_corrupt_backup_other_env_and_unconfirmed_production(proj: Proj) -> None:
    folder = take_backup(proj, "users", "--env", "dev")
    dump = folder / "dump.sql"
    good = dump.read_bytes()
    at = good.index(b"Ada Lovelace")
    dump.write_bytes(good[:at] + b"X" + good[at + 1 :])
    before = snapshot(proj, APP_TABLES)

    result = proj.run("restore", str(folder), "--env", "dev")

    assert result.exit_code == 1
    assert f"Backup {folder} fails verification: dump.sql: sha256 does not match the manifest" in result.stderr
    assert "Nothing was touched." in result.stderr
    assert snapshot(proj, APP_TABLES) == before
    assert sorted(p.name for p in (proj.root / "backups" / "dev").iterdir()) == [folder.name]  # no pre-restore

    dump.write_bytes(good)
    result = proj.run("restore", str(folder), "--env", "staging")
    assert result.exit_code == 2
    assert (
        f"Backup {folder.name} was taken from dev, not staging. Restoring it replaces rows of staging with rows "
        "of dev: if that is what you want, pass --from-other-env." in result.stderr
    )

    result = proj.run("restore", folder.name, "--env", "production", "--from-other-env")
    assert result.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in result.stderr
    assert "users" not in proj.tables("production")
    assert lock_rows(proj, "production") == []
    assert not (proj.root / "backups" / "production").exists() or not [
        p for p in (proj.root / "backups" / "production").iterdir() if p.name != "reports"
    ]

    result = proj.run("restore", "--bookmark", "00000001-abc", "--env", "dev")
    assert result.exit_code == 2
    assert "Time Travel is remote-only: dev is a local database. Restore a backup folder instead" in result.stderr


REMOTE_WRANGLER = """\
name = "d1ops-remote-test"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "app-db"
database_id = "{uuid}"
"""

REMOTE_ENVIRONMENTS = """\
database: DB
environments:
  - name: production
    target: remote
    protected: true
"""


def test_restore_bookmark_goes_back_in_time_and_clears_the_stale_lock(
    tmp_path: Path, cloudflare_api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloudflare_api.env.items():
        monkeypatch.setenv(name, value)
    server = cloudflare_api.server
    uuid = server.create_database("app-db")
    proj = Proj(tmp_path / "remote")
    proj.write("wrangler.toml", REMOTE_WRANGLER.format(uuid=uuid))
    proj.write("environments.yaml", REMOTE_ENVIRONMENTS)
    # The state to go back to, taken while a migration run held the lock (as the pipeline records bookmarks).
    server.execute(
        uuid,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'kept');"
        "CREATE TABLE d1ops_lock (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, acquired_at TEXT NOT "
        "NULL, expires_at TEXT); INSERT INTO d1ops_lock VALUES (1, 'a migrate run', '2025-01-01', '2025-01-02');",
    )
    bookmark = server.bookmarks(uuid)[-1]
    server.execute(uuid, "DELETE FROM d1ops_lock; DELETE FROM notes; INSERT INTO notes VALUES (2, 'mistake')")

    result = proj.run("restore", "--bookmark", bookmark, "--env", "production", "--yes", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert server.execute(uuid, "SELECT * FROM notes")[0]["results"] == [{"id": 1, "body": "kept"}]
    assert server.execute(uuid, "SELECT * FROM d1ops_lock")[0]["results"] == []
    assert report["bookmark"] == bookmark
    assert report["bookmark_before"] in server.bookmarks(uuid)
    assert report["wrangler_processes"] == 3  # lock, time-travel restore, clear the lock


def test_restore_refuses_a_manifest_listing_no_files_and_restores_nothing(proj: Proj) -> None:
    folder = take_backup(proj, "users", "--env", "dev")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = []
    manifest_path.write_text(json.dumps(manifest))
    sql(proj, "UPDATE users SET name = 'changed after the backup' WHERE id = 1")
    before = snapshot(proj, APP_TABLES)
    assert proj.run("backups", "verify", folder.name).exit_code == 1

    result = proj.run("restore", str(folder), "--env", "dev")

    assert result.exit_code == 1
    assert "the manifest lists no files: it vouches for nothing" in result.stderr
    assert "Nothing was touched." in result.stderr
    assert snapshot(proj, APP_TABLES) == before
    assert sorted(p.name for p in (proj.root / "backups" / "dev").iterdir()) == [folder.name]  # no pre-restore


def test_an_in_place_restore_says_that_rows_written_after_its_export_stay(
    proj: Proj, monkeypatch: pytest.MonkeyPatch
) -> None:
    from d1ops.wrangler.runner import Wrangler

    folder = take_backup(proj, "settings", "--env", "dev")
    real = Wrangler.execute

    def execute(self: Wrangler, env: Any, **kwargs: Any) -> Any:
        file = kwargs.get("file")
        if file is not None and file.name == "restore.sql":  # a live app writes after the pre-restore export
            real(self, env, command="INSERT INTO settings (key, value) VALUES ('written-meanwhile', 'x')")
        return real(self, env, **kwargs)

    monkeypatch.setattr(Wrangler, "execute", execute)
    code, report, stderr = restore(proj, str(folder), "--env", "dev")

    assert code == 0, stderr
    assert proj.query("SELECT value FROM settings WHERE key = 'written-meanwhile'") == [("x",)]  # it stayed
    said = [w for w in report["warnings"] if w.startswith("in place, settings got the backup's rows")]
    assert said and "rows an app wrote after that export were not compared and are still there" in said[0]
