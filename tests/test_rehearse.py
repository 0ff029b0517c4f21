"""`d1ops rehearse`: pending migrations applied to a scratch copy of an environment's data, never to it."""

from __future__ import annotations

import hashlib
import json
import signal
import tempfile
from pathlib import Path

import pytest

from d1ops.project.project import open_projects
from tests.conftest import Proj
from tests.test_migrate import wrangler
from tests.wrangler_shim import kill, shim_env, start_d1ops, wait_for


def test_rehearse_reports_each_migrations_effect_and_leaves_the_environment_byte_identical(proj: Proj) -> None:
    proj.sql(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, body TEXT);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) "
        "INSERT INTO events SELECT i, CASE WHEN i % 2 THEN 'view' ELSE 'click' END, 'évènement ' || i FROM c",
    )
    proj.write(
        "migrations/0003_drop_views.sql",
        "-- d1ops: verify SELECT count(*) = 50000 FROM events\n"
        "-- d1ops: verify SELECT count(*) = 0 FROM events WHERE kind = 'view'\n"
        "DELETE FROM events WHERE kind = 'view';\n"
        "CREATE TABLE event_kinds (kind TEXT PRIMARY KEY);\nINSERT INTO event_kinds VALUES ('click');\n",
    )
    proj.write(
        "migrations/0004_wrong_check.sql",
        "-- d1ops: verify SELECT count(*) = 1 FROM users\nALTER TABLE events ADD COLUMN at TEXT;\n",
    )
    sqlite_file = proj.sqlite_path("dev")
    before = hashlib.sha256(sqlite_file.read_bytes()).hexdigest()

    result = proj.run("rehearse", "dev", "--json", "--accept-drift")  # events was made by hand: drift

    assert result.exit_code == 1  # the second migration's check fails
    report = json.loads(result.stdout)
    assert [(d["kind"], d["name"]) for d in report["drift"]] == [("extra", "events")]
    assert report["copied_rows"]["events"] == 100_000
    first, second = report["migrations"]
    assert first["name"] == "0003_drop_views.sql" and first["result"] == "applied"
    assert first["rows_changed"] == {"event_kinds": 1, "events": -50_000}
    assert first["rows"] == {
        "events": {"inserted": 0, "updated": 0, "deleted": 50_000},
        "event_kinds": {"inserted": 1, "updated": 0, "deleted": 0},
    }
    assert first["tables_created"] == ["event_kinds"]
    assert [c["passed"] for c in first["checks"]] == [True, True]
    assert first["duration_ms"] > 0
    assert second["result"] == "check failed"
    assert second["checks"][0]["sql"] == "SELECT count(*) = 1 FROM users" and second["checks"][0]["passed"] is False
    assert hashlib.sha256(sqlite_file.read_bytes()).hexdigest() == before
    assert proj.query("SELECT count(*) FROM events") == [(100_000,)]
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id")[-1] == ("0002_sample_data.sql",)


def test_rehearse_names_the_failing_statement(proj: Proj) -> None:
    proj.write("migrations/0003_bad.sql", "CREATE TABLE a (id INTEGER);\nINSERT INTO missing VALUES (1);\n")
    result = proj.run("rehearse", "dev")
    assert result.exit_code == 1
    assert "0003_bad.sql  failed" in result.output
    assert "statement: INSERT INTO missing VALUES (1);" in result.output
    assert "dev was not changed" in result.output
    assert "a" not in proj.tables()


def test_promote_rehearse_stops_before_touching_the_target_when_the_rehearsal_fails(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    config = proj.config.read_text(encoding="utf-8")
    staging = "    wrangler_env: staging\n"
    proj.config.write_text(config.replace(staging, f"{staging}    protected: true\n"))
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    # applies, but its own check fails: the rehearsal on a copy of staging says so before staging is touched
    proj.write(
        "migrations/0004_seed.sql", "-- d1ops: verify SELECT count(*) = 2 FROM tags\nINSERT INTO tags VALUES (1);\n"
    )
    assert proj.run("migrate", "dev").exit_code == 0
    tracking = "SELECT name FROM d1_migrations UNION ALL SELECT name FROM d1ops_migrations ORDER BY 1"
    before = proj.query(tracking, "staging"), proj.tables("staging")

    # staging is protected and there is no terminal: the rehearsal's gate refuses first, in the change's plan
    result = proj.run("promote", "--to", "staging", "--rehearse", "--json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["command"] == "promote" and report["plan"] == ["0003_tags.sql", "0004_seed.sql"]
    assert [m["result"] for m in report["rehearsal"]["migrations"]] == ["applied", "check failed"]
    assert report["error"].startswith("The rehearsal on a copy of staging failed: nothing was promoted.\n")
    assert "  0004_seed.sql: check failed: SELECT count(*) = 2 FROM tags -> 0" in result.stderr
    assert "no terminal to confirm on" not in result.stderr  # refused before any confirmation
    assert report["backup"] is None and report["migrations"] == []
    assert (proj.query(tracking, "staging"), proj.tables("staging")) == before
    assert proj.query("SELECT count(*) FROM d1ops_lock", "staging") == [(0,)]
    assert [p.name for p in (proj.root / "backups" / "staging").iterdir()] == ["reports"]  # no backup taken


def test_rehearse_copies_fts5_tables_and_their_triggers(proj: Proj) -> None:
    project = open_projects(proj.config)[0]
    project.wrangler.execute(
        project.config.env("dev"),
        command="CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
        "CREATE VIRTUAL TABLE notes_fts USING fts5(body, content='notes', content_rowid='id');"
        "CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN "
        "INSERT INTO notes_fts(rowid, body) VALUES (new.id, new.body); END;"
        "INSERT INTO notes (body) VALUES ('漢字 first'), ('second');",
    )
    proj.write(
        "migrations/0003_more_notes.sql",
        "-- d1ops: verify SELECT count(*) = 2 FROM notes_fts WHERE notes_fts MATCH 'second OR third'\n"
        "INSERT INTO notes (body) VALUES ('third');\n",
    )

    result = proj.run("rehearse", "dev", "--json", "--accept-drift")  # notes was made by hand: drift

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["copied_rows"]["notes"] == 2
    assert report["migrations"][0]["checks"][0]["passed"] is True  # the copy has the FTS table and its trigger


def test_promote_rehearse_of_a_database_d1ops_never_tracked_applies_as_plain_promote_does(proj: Proj) -> None:
    """staging was migrated by wrangler alone (0001): it has d1_migrations, and no table of d1ops."""
    later = proj.migrations / "0002_sample_data.sql"
    held = later.read_text(encoding="utf-8")
    later.unlink()
    applied = wrangler(proj.root, "d1", "migrations", "apply", "DB", "--local", "--env", "staging")
    assert applied.returncode == 0, applied.stderr
    later.write_text(held, encoding="utf-8")
    assert "d1ops_migrations" not in {r[0] for r in proj.query("SELECT name FROM sqlite_master", "staging")}

    result = proj.run("promote", "--to", "staging", "--rehearse")

    assert result.exit_code == 0, result.output
    assert "0002_sample_data.sql  applied" in result.output
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id", "staging") == [
        ("0001_initial_schema.sql",),
        ("0002_sample_data.sql",),
    ]


def test_rehearse_of_an_empty_database_applies_every_migration_on_the_copy(proj: Proj) -> None:
    result = proj.run("rehearse", "staging", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [
        ("0001_initial_schema.sql", "applied"),
        ("0002_sample_data.sql", "applied"),
    ]
    assert proj.tables("staging") == set()  # only the copy was changed


def test_a_killed_rehearsal_leaves_its_copy_only_until_the_next_run(
    proj: Proj, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    env, mark = shim_env(proj.root, "d1 export", "before")
    process = start_d1ops(["--config", str(proj.config), "rehearse", "dev"], {**env, "TMPDIR": str(temp)})
    wait_for(mark, process)
    kill(process, signal.SIGKILL)
    left = [p.name for p in temp.iterdir()]
    assert [n for n in left if n.startswith(f"d1ops-rehearse-{process.pid}-")], left  # SIGKILL cleans nothing

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    again = proj.run("rehearse", "dev")

    assert again.exit_code == 0, again.output
    assert [p.name for p in temp.iterdir()] == []  # the dead run's copy went with this one's


PARENT_AND_CHILDREN = """\
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE members (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE);
CREATE TABLE notes (id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(id) ON DELETE SET NULL, body TEXT);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500)
INSERT INTO accounts SELECT i, 'compte ' || i FROM c;
INSERT INTO members SELECT id, id FROM accounts;
INSERT INTO notes SELECT id, id, 'note ' || id FROM accounts;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20003)
INSERT INTO counters SELECT 'compteur ' || i, i FROM c;
"""
# drizzle-kit's table rebuild: on D1 `PRAGMA foreign_keys=OFF` does nothing inside the batch, so DROP TABLE
# accounts deletes its rows first and fires the children's ON DELETE actions.
REBUILD = """\
PRAGMA foreign_keys=OFF;
CREATE TABLE __new_accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, plan TEXT DEFAULT 'free');
INSERT INTO __new_accounts (id, name) SELECT id, name FROM accounts;
DROP TABLE accounts;
ALTER TABLE __new_accounts RENAME TO accounts;
PRAGMA foreign_keys=ON;
"""


def test_rehearse_tells_rows_inserted_updated_and_deleted_and_names_what_a_rebuild_would_lose(proj: Proj) -> None:
    proj.write("migrations/0003_accounts.sql", PARENT_AND_CHILDREN)
    assert proj.run("migrate", "dev").exit_code == 0
    # an UPDATE of every row plus 3 inserts: the net change (+3) hides 20,003 updated rows
    proj.write(
        "migrations/0004_recount.sql",
        "-- d1ops: destructive every counter moves up\nUPDATE counters SET n = n + 1;\n"
        "INSERT INTO counters VALUES ('été', 1), ('冬', 2), ('x', 3);\n",
    )
    proj.write("migrations/0005_accounts_plan.sql", "-- d1ops: destructive rebuild\n" + REBUILD)

    result = proj.run("rehearse", "dev", "--json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    recount, rebuild = report["migrations"]
    assert recount["result"] == "applied" and recount["row_guard"] == "passes"
    assert recount["rows"] == {"counters": {"inserted": 3, "updated": 20_003, "deleted": 0}}
    assert recount["rows_changed"] == {"counters": 3}
    assert rebuild["result"] == "refused by the row guard" and rebuild["row_guard"] == "refuses"
    assert rebuild["rows"] == {
        "members": {"inserted": 0, "updated": 0, "deleted": 500},
        "notes": {"inserted": 0, "updated": 500, "deleted": 0},
    }  # accounts keeps its 500 rows, matched by id (its new column holds its default)
    cause = "DROP TABLE accounts in 0005_accounts_plan.sql"
    assert [(v["table"], v["what"], v["lost"], v["cause"], v["declared"]) for v in rebuild["victims"]] == [
        ("members", "rows", 500, f"ON DELETE CASCADE from {cause}", None),
        ("notes", "links in account_id", 500, f"ON DELETE SET NULL from {cause}", None),
    ]
    assert [(f["file"], f["rule"]) for f in report["lint"]] == [("0005_accounts_plan.sql", "fk-drop")]
    assert report["drift"] == [] and report["ok"] is False
    assert proj.query("SELECT count(*) FROM members") == [(500,)]  # dev itself is untouched

    # declared, the same rebuild passes the guard; the victims are still named, as declared; a hand-made index
    # is drift, accepted here
    proj.write(
        "migrations/0005_accounts_plan.sql",
        "-- d1ops: destructive rebuild\n-- d1ops: loses rows in members, notes re-created by the app\n" + REBUILD,
    )
    proj.sql("CREATE INDEX notes_by_body ON notes(body)")
    text = proj.run("rehearse", "dev", "--accept-drift")

    assert text.exit_code == 0, text.output
    assert "dev has drifted: extra index notes_by_body" in text.output
    assert "accepted (--accept-drift)" in text.output
    assert "counters +3 ~20003" in text.output
    assert "members -500, notes ~500" in text.output
    assert (
        "0005_accounts_plan.sql: members would lose 500 rows (ON DELETE CASCADE from DROP TABLE accounts in "
        "0005_accounts_plan.sql); declared: re-created by the app"
    ) in text.output
    assert proj.query("SELECT count(*) FROM notes WHERE account_id IS NOT NULL") == [(500,)]


def test_rehearse_reports_a_drifted_target_as_migrate_would_refuse_it(proj: Proj) -> None:
    proj.sql("CREATE INDEX users_by_email ON users(email)")

    refused = proj.run("rehearse", "dev", "--json")
    accepted = proj.run("rehearse", "dev", "--json", "--accept-drift")

    assert refused.exit_code == 1, refused.output
    report = json.loads(refused.stdout)
    assert [(d["kind"], d["type"], d["name"]) for d in report["drift"]] == [("extra", "index", "users_by_email")]
    assert report["migrations"] == [] and report["wrangler_processes"] == 1  # the state and schema: one read
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["drift_accepted"] is True
