"""`d1ops migrate` / `status` / `execute` / `new` against the real wrangler and a real local D1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from d1ops.sql.text import sql_for_batch
from tests.conftest import WRANGLER, Proj, make_project

MVP_TABLES = {"users", "sessions", "api_keys", "posts", "audit_logs", "settings"}


def wrangler(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "WRANGLER_HIDE_BANNER": "true", "NO_COLOR": "1"}
    return subprocess.run(
        [str(WRANGLER), *args], cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )


def test_fresh_migrate_applies_both_then_nothing_and_wrangler_agrees(empty_proj: Proj) -> None:
    first = empty_proj.run("migrate")
    assert first.exit_code == 0, first.output
    assert "Applied 2 migration(s) to dev" in first.output
    assert MVP_TABLES <= empty_proj.tables("dev")
    assert empty_proj.query("SELECT count(*) FROM users")[0][0] == 4

    second = empty_proj.run("migrate", "dev")
    assert second.exit_code == 0
    assert "dev: nothing to apply; dev is up to date." in second.output

    listed = wrangler(empty_proj.root, "d1", "migrations", "list", "DB", "--local")
    assert listed.returncode == 0, listed.stderr
    assert "No migrations to apply" in listed.stdout
    # the lock is released after a run
    assert empty_proj.query("SELECT count(*) FROM d1ops_lock")[0][0] == 0


def test_status_json_lists_applied_migrations_with_checksums(proj: Proj) -> None:
    result = proj.run("status", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    files = {p.name: p for p in proj.migrations.glob("*.sql")}
    import hashlib

    rows = {m["name"]: m for m in data["migrations"]}
    assert list(rows) == ["0001_initial_schema.sql", "0002_sample_data.sql"]
    for name, row in rows.items():
        cell = row["envs"]["dev"]
        assert cell["status"] == "applied"
        assert cell["applied_at"]
        assert cell["checksum"] == hashlib.sha256(files[name].read_bytes()).hexdigest()
    assert data["wrangler_processes"] == 1


def test_status_check_exits_3_when_pending(proj: Proj) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n")
    result = proj.run("status", "--check")
    assert result.exit_code == 3
    assert "0003_tags.sql" in result.output and "pending" in result.output
    assert proj.run("status").exit_code == 0


def test_dry_run_prints_plan_and_changes_nothing(proj: Proj) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    result = proj.run("migrate", "--dry-run")
    assert result.exit_code == 0
    assert "1 migration(s) would be applied:\n  0003_tags.sql" in result.output
    assert "tags" not in proj.tables("dev")
    assert not (proj.root / "backups").exists()


def test_failing_migration_records_nothing_and_a_fixed_file_applies(proj: Proj) -> None:
    bad = proj.write(
        "migrations/0003_tags.sql",
        """\
        CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        INSERT INTO tags (name) VALUES ('one');
        INSERT INTO no_such_table VALUES (1);
        """,
    )
    before = proj.query("SELECT * FROM d1_migrations ORDER BY id")
    result = proj.run("migrate")
    assert result.exit_code == 1
    assert "Migration 0003_tags.sql failed on dev: no such table: no_such_table" in result.output
    assert "statement: INSERT INTO no_such_table VALUES (1);" in result.output
    assert "Nothing was applied or recorded" in result.output
    assert "tags" not in proj.tables("dev")
    assert proj.query("SELECT * FROM d1_migrations ORDER BY id") == before
    assert proj.query("SELECT count(*) FROM d1ops_migrations WHERE name = '0003_tags.sql'") == [(0,)]
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]

    bad.write_text(bad.read_text().replace("INSERT INTO no_such_table VALUES (1);\n", ""))
    fixed = proj.run("migrate")
    assert fixed.exit_code == 0, fixed.output
    assert proj.query("SELECT name FROM tags") == [("one",)]
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id")[-1] == ("0003_tags.sql",)


def test_failure_midway_keeps_earlier_migrations_applied(proj: Proj) -> None:
    proj.write("migrations/0003_ok.sql", "CREATE TABLE ok_table (id INTEGER PRIMARY KEY);\n")
    proj.write("migrations/0004_bad.sql", "CREATE TABLE bad_table (id INTEGER PRIMARY KEY);\nSELECT * FROM nope;\n")
    proj.write("migrations/0005_later.sql", "CREATE TABLE later_table (id INTEGER PRIMARY KEY);\n")
    result = proj.run("migrate", "--one-by-one", "--json")  # wrangler's semantics, on request
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [
        ("0003_ok.sql", "applied"),
        ("0004_bad.sql", "failed"),
        ("0005_later.sql", "not run"),
    ]
    assert report["exit_code"] == 1 and "no such table: nope" in report["error"]
    assert "ok_table" in proj.tables() and not {"bad_table", "later_table"} & proj.tables()
    assert [r[0] for r in proj.query("SELECT name FROM d1_migrations ORDER BY id")][-1] == "0003_ok.sql"


def test_checksum_and_duration_recorded_with_the_migration(proj: Proj) -> None:
    rows = proj.query("SELECT name, checksum, applied_by, duration_ms FROM d1ops_migrations ORDER BY name")
    assert [r[0] for r in rows] == ["0001_initial_schema.sql", "0002_sample_data.sql"]
    assert all(len(r[1]) == 64 and r[2] and r[3] is not None and r[3] >= 0 for r in rows)


def test_skip_list_keeps_a_migration_out_of_an_environment(tmp_path: Path, template_dir: Path) -> None:
    del template_dir
    config = """\
database: DB
environments:
  - name: dev
    target: local
    backup: skip
    skip: ["0002_sample_data.sql"]
"""
    p = make_project(tmp_path / "p", environments=config)
    result = p.run("migrate")
    assert result.exit_code == 0, result.output
    assert "Skipped on dev (skip list): 0002_sample_data.sql" in result.output
    assert p.query("SELECT count(*) FROM users") == [(0,)]
    status = json.loads(p.run("status", "--json").stdout)
    assert [(m["name"], m["envs"]["dev"]["status"]) for m in status["migrations"]] == [
        ("0001_initial_schema.sql", "applied"),
        ("0002_sample_data.sql", "skipped"),
    ]
    assert p.run("status", "--check").exit_code == 0


def test_database_migrated_by_wrangler_is_adopted_as_is(empty_proj: Proj) -> None:
    applied = wrangler(empty_proj.root, "d1", "migrations", "apply", "DB", "--local")
    assert applied.returncode == 0, applied.stderr
    status = json.loads(empty_proj.run("status", "--json").stdout)
    assert [(m["envs"]["dev"]["status"], m["envs"]["dev"]["checksum"]) for m in status["migrations"]] == [
        ("applied", None),
        ("applied", None),
    ]
    result = empty_proj.run("migrate")
    assert result.exit_code == 0 and "nothing to apply" in result.output
    # the next d1ops run recorded the files' checksums for the wrangler-applied migrations
    rows = empty_proj.query("SELECT name, applied_by FROM d1ops_migrations ORDER BY name")
    assert rows == [
        ("0001_initial_schema.sql", "adopted from wrangler"),
        ("0002_sample_data.sql", "adopted from wrangler"),
    ]
    empty_proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    assert empty_proj.run("migrate").exit_code == 0
    listed = wrangler(empty_proj.root, "d1", "migrations", "list", "DB", "--local")
    assert "No migrations to apply" in listed.stdout


def test_new_creates_next_numbered_file(proj: Proj) -> None:
    result = proj.run("new", "add_tags")
    assert result.exit_code == 0
    assert result.output == (
        "Created migrations/0003_add_tags.sql (the migration)\n"
        "Created migrations/down/0003_add_tags.sql (its rollback: write there what undoes it)\n"
    )
    assert (proj.migrations / "down" / "0003_add_tags.sql").is_file()
    assert (proj.migrations / "0003_add_tags.sql").read_text().startswith("-- Migration number: 0003")


def test_execute_command_json(proj: Proj) -> None:
    result = proj.run("execute", "dev", "--command", "SELECT email FROM users ORDER BY id LIMIT 2", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["results"] == [{"email": "ada@example.com"}, {"email": "grace@example.com"}]


def test_execute_sql_error_is_exit_1_with_wranglers_message(proj: Proj) -> None:
    result = proj.run("execute", "dev", "--command", "SELECT * FROM nope")
    assert result.exit_code == 1
    assert "Error: no such table: nope: SQLITE_ERROR" in result.output


def test_execute_on_protected_env_without_tty_or_yes_refuses(proj: Proj) -> None:
    result = proj.run("execute", "production", "--command", "CREATE TABLE x (id INTEGER)")
    assert result.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in result.output


REAL_PROJECT = {
    "001_init.sql": "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL);\n",
    "002_posts.sql": "CREATE TABLE posts (id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(id), "
    "title TEXT, body TEXT);",  # no trailing newline
    "002_settings.sql": "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT);\n",
    "005_fts.sql": """\
CREATE VIRTUAL TABLE posts_fts USING fts5(title, body, content='posts', content_rowid='id');
CREATE TRIGGER posts_ai AFTER INSERT ON posts BEGIN
  -- keep the index in sync; a comment inside the body
  INSERT INTO posts_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
END;
""",
    "006_drizzle.sql": """\
CREATE TABLE `tags` (
\t`id` integer PRIMARY KEY NOT NULL,
\t`name` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `tags_name_unique` ON `tags` (`name`);--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_settings` (`k` text PRIMARY KEY NOT NULL, `v` text, `updated` integer);
--> statement-breakpoint
INSERT INTO `__new_settings`("k", "v") SELECT "k", "v" FROM `settings`;--> statement-breakpoint
DROP TABLE `settings`;--> statement-breakpoint
ALTER TABLE `__new_settings` RENAME TO `settings`;--> statement-breakpoint
PRAGMA foreign_keys=ON;""",
    "010_seed.sql": "INSERT INTO accounts (email) VALUES ('a@example.com');\n"
    "INSERT INTO posts (account_id, title, body) VALUES (1, 'hello', 'first post');\n",
    "0011_next.sql": "ALTER TABLE accounts ADD COLUMN name TEXT;\n",
}


def _schema(p: Proj) -> list[tuple[str, str, str]]:
    return p.query(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE '%d1%' AND name NOT LIKE '_cf%' ORDER BY name"
    )


def test_real_project_folder_migrates_in_wranglers_order_to_the_same_schema(tmp_path: Path, template_dir: Path) -> None:
    del template_dir
    config = "database: DB\nbaseline: 010_seed.sql\nenvironments:\n  - name: dev\n    target: local\n    backup: skip\n"
    ours = make_project(tmp_path / "ours", environments=config, migrations_from=None)
    twin = make_project(tmp_path / "twin", environments=config, migrations_from=None)
    for p in (ours, twin):
        for name, text in REAL_PROJECT.items():
            (p.migrations / name).write_text(text)
        p.write("migrations/down/0011_next.sql", "ALTER TABLE accounts DROP COLUMN name;\n")
        p.root.joinpath("wrangler.toml").write_text(p.root.joinpath("wrangler.toml").read_text())

    result = ours.run("migrate")
    assert result.exit_code == 0, result.output
    applied = wrangler(twin.root, "d1", "migrations", "apply", "DB", "--local")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    assert ours.query("SELECT name FROM d1_migrations ORDER BY id") == twin.query(
        "SELECT name FROM d1_migrations ORDER BY id"
    )
    assert [r[0] for r in ours.query("SELECT name FROM d1_migrations ORDER BY id")] == [
        "001_init.sql",
        "002_posts.sql",
        "002_settings.sql",
        "005_fts.sql",
        "006_drizzle.sql",
        "010_seed.sql",
        "0011_next.sql",
    ]
    assert _schema(ours) == _schema(twin)
    assert ours.query("SELECT rowid, title FROM posts_fts") == [(1, "hello")]
    # after the baseline, the gap (010 → 0011 is fine) and names are judged: nothing reported here
    assert "warning" not in result.output


def test_a_held_lock_refuses_a_second_run_until_unlocked(proj: Proj) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    proj.sql(  # behind d1ops' back: `d1ops execute` of a write takes the lock itself
        "INSERT INTO d1ops_lock (id, owner, acquired_at) VALUES (1, 'ci@runner-7 run 1234', '2026-01-01T00:00:00Z')",
    )
    result = proj.run("migrate")
    assert result.exit_code == 1
    assert "Environment 'dev' is locked by ci@runner-7 run 1234 since 2026-01-01T00:00:00Z" in result.output
    assert "`d1ops unlock dev`" in result.output
    assert "tags" not in proj.tables()
    assert "locked by ci@runner-7 run 1234" in proj.run("status").output
    assert proj.run("unlock", "dev").exit_code == 0
    assert proj.run("migrate").exit_code == 0
    assert "tags" in proj.tables()


@pytest.mark.parametrize(
    "message",
    [
        "database is locked: SQLITE_BUSY",
        "The Workers runtime failed to start. (workerd: database is locked: SQLITE_BUSY)",
        "false == true",
    ],
)
def test_busy_local_database_is_retried_with_the_same_argv(proj: Proj, mocker: MockerFixture, message: str) -> None:
    from d1ops.errors import WranglerError
    from d1ops.wrangler.runner import Wrangler

    real_run = Wrangler.run

    def run(self: Wrangler, args: list[str], **kwargs: object) -> str:
        if fake.call_count <= 2:  # two busy answers, as when another wrangler process writes the same file
            raise WranglerError(["wrangler", *args], 1, message)
        return real_run(self, args, **kwargs)  # type: ignore[arg-type]

    mocker.patch("d1ops.wrangler.runner.time.sleep")
    fake = mocker.patch.object(Wrangler, "run", autospec=True, side_effect=run)
    result = proj.run("execute", "dev", "--command", "SELECT count(*) AS n FROM users", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["results"] == [{"n": 4}]
    expected = ["d1", "execute", "DB", "--local", "--config", str(proj.root / "wrangler.toml"), "--json", "--yes"]
    seen = [list(call.args[1]) for call in fake.call_args_list]
    sent = sql_for_batch("SELECT count(*) AS n FROM users")  # read-only SQL is protected like every change's
    assert seen == [[*expected, "--command", sent]] * 3


def test_busy_database_that_stays_locked_is_reported_as_contention(proj: Proj, mocker: MockerFixture) -> None:
    from d1ops.errors import WranglerError
    from d1ops.wrangler.runner import Wrangler

    mocker.patch("d1ops.wrangler.runner.time.sleep")
    busy = WranglerError(["wrangler", "d1", "execute"], 1, "database is locked: SQLITE_BUSY")
    mocker.patch.object(Wrangler, "run", side_effect=busy)
    result = proj.run("execute", "dev", "--command", "SELECT 1")
    assert result.exit_code == 1
    assert "stayed locked by another process after 5 tries" in result.output


def test_status_all_shows_a_missing_file(proj: Proj) -> None:
    (proj.migrations / "0002_sample_data.sql").unlink()
    result = proj.run("status", "--all", "--json")
    assert result.exit_code == 0
    rows = {m["name"]: m["envs"] for m in json.loads(result.stdout)["migrations"]}
    assert rows["0002_sample_data.sql"]["dev"]["status"] == "missing-file"
    assert rows["0001_initial_schema.sql"]["staging"]["status"] == "pending"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_migration_stops_wrangler_applies_nothing_and_releases_the_lock(proj: Proj, signum: int) -> None:

    proj.write(
        "migrations/0003_slow.sql",
        """\
        CREATE TABLE slow (id INTEGER PRIMARY KEY, v TEXT);
        WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10000000)
        INSERT INTO slow SELECT i, printf('%0100d', i) FROM c;
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "d1ops", "--config", str(proj.config), "migrate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and "--file" not in _wrangler_commands(proj.root):
        time.sleep(0.1)  # wait until the migration batch is running in wrangler
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"migrate ended (exit {proc.returncode}) before its batch ran:\n{out}\n{err}")
    assert "--file" in _wrangler_commands(proj.root)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert _wrangler_commands(proj.root) == ""  # no wrangler (or workerd) left running on this project
    assert "slow" not in proj.tables()
    assert proj.query("SELECT count(*) FROM d1_migrations WHERE name = '0003_slow.sql'") == [(0,)]
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)], err


def _wrangler_commands(root: Path) -> str:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if str(root) in line and "wrangler" in line)


def test_begin_transaction_text_in_a_migration_value_is_stored_exactly(proj: Proj) -> None:
    value = "BEGIN TRANSACTION; keep COMMIT; this"
    proj.write("migrations/0003_kept.sql", f"CREATE TABLE kept (v TEXT);\nINSERT INTO kept VALUES ('{value}');\n")
    proj.write("migrations/down/0003_kept.sql", "DROP TABLE kept;\n")
    lint = proj.run("lint")
    assert "warning: 0003_kept.sql:2: [transaction-text]" in lint.output
    result = proj.run("migrate", "dev")
    assert result.exit_code == 0, result.output
    assert proj.query("SELECT v FROM kept") == [(value,)]
