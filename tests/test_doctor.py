"""doctor, and working without credentials: local environments still work and are shown; remote ones say what
is missing; a gate that must read another environment says which and why. Tokens are never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from d1ops.project.project import open_project
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
def test_doctor_passes_warns_without_credentials_and_flags_a_stale_lock(remote: Proj) -> None:
    result = remote.run("doctor")
    assert result.exit_code == 0, result.output
    assert "WARN  credentials" in result.output
    assert "no credentials: staging, production cannot be reached" in result.output
    assert "→ set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`" in result.output
    assert "WARN  local state" in result.output  # nothing created yet
    assert "WARN  backups dir" in result.output and "not in .gitignore" in result.output

    project = open_project(remote.config)
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
