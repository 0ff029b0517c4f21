"""doctor, and working without credentials: local environments still work and are shown; remote ones say what
is missing; a gate that must read another environment says which and why. Tokens are never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from d1ops.project.project import open_projects
from tests.conftest import THREE_LOCAL_ENVIRONMENTS, Proj, make_project

REMOTE_ENVIRONMENTS = THREE_LOCAL_ENVIRONMENTS.replace(
    "  - name: staging\n    target: local", "  - name: staging\n    target: remote"
).replace("  - name: production\n    target: local", "  - name: production\n    target: remote")
NO_CREDENTIALS = "no credentials (set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`)"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Proj:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no `wrangler login` token of this machine
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return make_project(tmp_path / "p", environments=REMOTE_ENVIRONMENTS)


@pytest.mark.wrangler
def test_status_all_without_credentials_shows_dev_and_names_what_is_missing(remote: Proj) -> None:
    assert remote.run("migrate", "dev").exit_code == 0
    result = remote.run("status", "--all", "--json")
    assert result.exit_code == 1
    result = remote.run("status", "--all")
    assert result.exit_code == 1  # documented: a column could not be read
    lines = result.output.splitlines()
    assert lines[0].split() == ["MIGRATION", "DEV", "STAGING", "PRODUCTION"]
    assert lines[2].split()[1] == "applied" and "no credentials" in lines[2]
    assert "dev: 2 applied, 0 pending." in result.output
    assert f"staging: {NO_CREDENTIALS}." in result.output
    assert f"production: {NO_CREDENTIALS}." in result.output


def test_a_gate_that_reads_another_environment_says_which_and_why(remote: Proj) -> None:
    result = remote.run("migrate", "production", "--dry-run")
    assert result.exit_code == 1
    assert "`d1ops migrate production` must read staging first: the promotion-order gate checks" in result.output
    assert f"staging is remote and this machine has {NO_CREDENTIALS}." in result.output


@pytest.mark.wrangler
def test_without_credentials_a_local_rollback_works_and_says_what_it_did_not_check(remote: Proj) -> None:
    assert remote.run("migrate", "dev").exit_code == 0

    result = remote.run("rollback", "dev")

    assert result.exit_code == 0, result.output
    assert "Rolled back 1 migration(s) on dev" in result.stdout
    assert (
        f"the reverse-order gate did not check staging, production: remote, and this machine has {NO_CREDENTIALS}. "
        "dev is local, so the rollback went on; if staging, production still have 0002_sample_data.sql, roll back "
        "there first (with credentials: `d1ops rollback production --to 0001_initial_schema.sql`)."
    ) in " ".join(result.stderr.split())
    assert "CLOUDFLARE_API_TOKEN environment variable for wrangler to work" not in result.output
    assert remote.query("SELECT name FROM d1_migrations") == [("0001_initial_schema.sql",)]


@pytest.mark.wrangler
def test_without_credentials_remote_commands_say_so_in_d1ops_words(remote: Proj) -> None:
    rehearse = remote.run("rehearse", "staging")
    assert rehearse.exit_code == 1
    said = f"`d1ops rehearse staging` copies staging's data first: it is remote, and this machine has {NO_CREDENTIALS}"
    assert said in " ".join(rehearse.stderr.split())

    rollback = remote.run("rollback", "staging")  # a remote rollback: wrangler is asked, and its refusal explained
    assert rollback.exit_code == 1
    assert (
        "wrangler has no Cloudflare credentials for the remote database on this machine. Set CLOUDFLARE_API_TOKEN"
        in (rollback.stderr)
    )
    assert "for wrangler to work. Please go to" not in rollback.output
    assert "d1ops unlock" not in rollback.output  # the refused lock call took no lock


@pytest.mark.wrangler
def test_doctor_passes_warns_without_credentials_and_flags_a_stale_lock(remote: Proj) -> None:
    result = remote.run("doctor")
    assert result.exit_code == 0, result.output
    assert "WARN  credentials" in result.output
    assert "no credentials: staging, production cannot be reached" in result.output
    assert "→ set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`" in result.output
    assert "WARN  local state" in result.output  # nothing created yet
    assert "WARN  backups dir" in result.output and "not in .gitignore" in result.output

    project = open_projects(remote.config)[0]
    project.wrangler.execute(
        project.config.env("dev"),
        command="CREATE TABLE d1ops_lock(id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, "
        "acquired_at TEXT NOT NULL); INSERT INTO d1ops_lock VALUES (1, 'ci run 42', '2026-01-01T00:00:00Z');",
    )
    result = remote.run("doctor")
    assert result.exit_code == 0, result.output
    assert "WARN  lock dev" in result.output and "held by ci run 42" in result.output
    assert "`d1ops unlock dev`" in result.output


@pytest.mark.wrangler
def test_doctor_fails_on_a_refused_call_without_printing_the_token(
    remote: Proj, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok-SECRET-4711")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "0" * 32)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", "http://127.0.0.1:9/client/v4")  # nothing listens there
    result = remote.run("doctor")
    assert result.exit_code == 1
    assert "FAIL  credentials" in result.output and "present (CLOUDFLARE_API_TOKEN)" in result.output
    assert "tok-SECRET-4711" not in result.output


def test_doctor_fails_on_a_broken_config(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p", migrations_from=None)
    proj.config.write_text(THREE_LOCAL_ENVIRONMENTS.replace("database: DB", "database: DBX"))
    result = proj.run("doctor")
    assert result.exit_code == 1
    assert "FAIL  config" in result.output and "database 'DBX' has no d1_databases entry" in result.output
    assert "→ fix what it names, then run `d1ops doctor` again" in result.output  # not init: it exists


@pytest.mark.wrangler
def test_doctor_names_the_folders_where_they_are(tmp_path: Path) -> None:
    """migrations_dir in a subfolder, the wrangler config in another: wrangler keeps local state beside it."""
    proj = make_project(tmp_path / "p")
    (proj.root / "worker").mkdir()
    (proj.root / "wrangler.toml").rename(proj.root / "worker" / "wrangler.toml")
    (proj.root / "db").mkdir()
    (proj.root / "migrations").rename(proj.root / "db" / "migrations")
    text = THREE_LOCAL_ENVIRONMENTS.replace("migrations_dir: migrations", "migrations_dir: db/migrations")
    proj.config.write_text(text.replace("wrangler_config: wrangler.toml", "wrangler_config: worker/wrangler.toml"))
    assert proj.run("migrate", "dev").exit_code == 0

    result = proj.run("doctor")

    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "OK migrations 2 file(s) in db/migrations/" in lines
    assert "OK local state worker/.wrangler/state/v3/d1/ present (dev, staging, production)" in lines
    assert "OK lock dev no lock held" in lines  # read, as the local state is found
