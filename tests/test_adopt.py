"""adopt: a history that fails on an empty database (a column used before the migration that adds it) is recorded
as it is; afterwards `d1ops status` and `wrangler d1 migrations list` agree and the next migration applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d1ops.project.project import open_projects
from tests.conftest import THREE_LOCAL_WRANGLER, Proj, make_project

pytestmark = pytest.mark.wrangler  # every test runs d1ops on the `history` project

ENVIRONMENTS = """\
database: DB
wrangler_config: wrangler.toml
baseline: 0003_add_email.sql
environments:
  - name: dev
    target: local
  - name: staging
    target: local
    wrangler_env: staging
    protected: true
"""


@pytest.fixture
def history(tmp_path: Path) -> Proj:
    """0002 indexes a column that 0003 adds: replaying it on an empty database fails, as with plain wrangler.
    staging (standing in for production) has the schema that history produced there."""
    proj = make_project(
        tmp_path / "shop", wrangler=THREE_LOCAL_WRANGLER, environments=ENVIRONMENTS, migrations_from=None
    )
    proj.write("migrations/0001_init.sql", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);\n")
    proj.write("migrations/0002_email_index.sql", "CREATE INDEX idx_users_email ON users(email);\n")
    proj.write("migrations/0003_add_email.sql", "ALTER TABLE users ADD COLUMN email TEXT;\n")
    project = open_projects(proj.config)[0]
    project.wrangler.execute(
        project.config.env("staging"),
        command="CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT); "
        "CREATE INDEX idx_users_email ON users(email); INSERT INTO users(name, email) VALUES ('ada', 'a@x');",
    )
    return proj


def _users(proj: Proj, env: str) -> int:
    return int(proj.query("SELECT count(*) FROM users", env)[0][0])


def _wrangler_pending(proj: Proj, env: str) -> list[str]:
    """What `wrangler d1 migrations list` itself says is unapplied."""
    project = open_projects(proj.config)[0]
    e = project.config.env(env)
    out = project.wrangler.run(["d1", "migrations", "list", "DB", *project.wrangler.target_args(e)])
    return [line.split("│")[1].strip() for line in out.splitlines() if line.count("│") >= 2 and ".sql" in line]


def test_adopting_a_history_that_fails_on_an_empty_database(history: Proj) -> None:
    failed = history.run("migrate", "dev")
    assert failed.exit_code == 1 and "no such column: email" in failed.output

    refused = history.run("adopt", "staging", "--through", "0003_add_email.sql")
    assert refused.exit_code == 1 and "staging is protected and there is no terminal" in refused.output

    result = history.run("adopt", "staging", "--through", "0003_add_email.sql", "--yes")
    assert result.exit_code == 0, result.output
    assert "Recorded 3 migration(s) as applied in staging, without running them:" in result.output
    assert _users(history, "staging") == 1  # nothing ran, no row lost

    result = history.run("adopt", "dev", "--through", "0003_add_email.sql", "--schema-from", "staging")
    assert result.exit_code == 0, result.output
    assert "Schema of staging created first (2 statements)." in result.output
    assert _users(history, "dev") == 0  # schema only, no rows of staging

    status = history.run("status", "--all", "--check")
    assert status.exit_code == 0, status.output
    assert "dev: 3 applied, 0 pending." in status.output and "staging: 3 applied, 0 pending." in status.output
    # the history does not replay, so drift is judged against the schema adopt recorded: both are clean
    assert "drift not checked" not in status.output
    assert {r[0] for r in history.query("SELECT DISTINCT through FROM d1ops_schema", "staging")} == {
        "0003_add_email.sql"
    }
    assert _wrangler_pending(history, "dev") == []
    sql = "SELECT m.name, c.applied_by FROM d1_migrations m JOIN d1ops_migrations c USING (name) ORDER BY m.id"
    rows = history.query(sql, "dev")
    assert [name for name, _ in rows] == ["0001_init.sql", "0002_email_index.sql", "0003_add_email.sql"]
    assert all(str(applied_by).startswith("adopted by ") for _, applied_by in rows)

    history.write("migrations/0004_add_plan.sql", "ALTER TABLE users ADD COLUMN plan TEXT;\n")
    assert _wrangler_pending(history, "dev") == ["0004_add_plan.sql"]  # wrangler agrees on what is next
    result = history.run("migrate", "dev")  # held to the recorded schema plus 0004: no drift, so it applies
    assert result.exit_code == 0, result.output
    assert "Applied 1 migration(s) to dev" in result.output
    assert _wrangler_pending(history, "dev") == []
    clean = history.run("status", "dev", "--check")
    assert clean.exit_code == 0 and "drift" not in clean.output, clean.output

    history.sql("CREATE INDEX users_by_name ON users(name)", "staging")  # a hand edit in production
    drifted = history.run("status", "staging", "--check", "--json")
    assert drifted.exit_code == 3, drifted.output
    items = json.loads(drifted.stdout)["schema_drift"]["staging"]
    assert [(d["kind"], d["type"], d["name"]) for d in items] == [("extra", "index", "users_by_name")]
    refused = history.run("promote", "--to", "staging", "--yes")  # migrate and promote hold it to the record too
    assert refused.exit_code == 1 and "extra index users_by_name" in refused.output, refused.output
    assert "0004_add_plan.sql" not in {r[0] for r in history.query("SELECT name FROM d1_migrations", "staging")}


def test_adopt_refuses_names_not_on_disk_and_changes_nothing_on_a_dry_run(history: Proj) -> None:
    result = history.run("adopt", "dev", "--through", "0003_add_email")
    assert result.exit_code == 2
    assert "--through 0003_add_email: not a migration in migrations/. Did you mean '0003_add_email.sql'?" in (
        result.output
    )
    result = history.run("adopt", "staging", "--through", "0002_email_index.sql", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would record 2 migration(s) as applied in staging" in result.output
    assert "staging: 0 applied, 3 pending." in history.run("status", "staging").output


def test_adopt_refuses_an_empty_database_without_schema_from_and_says_what_to_do(history: Proj) -> None:
    for args in ([], ["--dry-run"]):
        result = history.run("adopt", "dev", "--through", "0003_add_email.sql", *args)
        assert result.exit_code == 1, result.output
        assert "dev holds no table: adopt records migrations as applied without running them" in result.output
        assert "`d1ops adopt dev --through 0003_add_email.sql --schema-from staging`" in " ".join(result.output.split())
    assert "dev: 0 applied, 3 pending." in history.run("status", "dev").output  # nothing was recorded
