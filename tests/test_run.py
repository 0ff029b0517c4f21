"""The run every change goes through: unlock and execute are runs too, and every run files a report."""

from __future__ import annotations

import json
from pathlib import Path

from d1ops.project.project import open_projects
from d1ops.support.files import unique_stamp
from tests.conftest import Proj


def hold_lock(proj: Proj, env: str) -> None:
    """A lock left by a run that died, written behind d1ops' back."""
    project = open_projects(proj.config)[0]
    project.wrangler.execute(
        project.config.env(env),
        command="CREATE TABLE IF NOT EXISTS d1ops_lock (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, "
        "acquired_at TEXT NOT NULL); INSERT INTO d1ops_lock VALUES (1, 'ci@runner-7 run dead', '2026-01-01T00:00:00Z')",
    )


def test_unlock_shows_the_holder_and_asks_on_a_protected_environment(proj: Proj) -> None:
    hold_lock(proj, "production")

    refused = proj.run("unlock", "production")

    assert refused.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in refused.output
    assert proj.query("SELECT owner FROM d1ops_lock", "production") == [("ci@runner-7 run dead",)]

    typed = proj.run("unlock", "production", input="production\n")  # CliRunner's input is not a TTY either
    assert typed.exit_code == 1

    done = proj.run("unlock", "production", "--yes", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["holder"], report["held_since"], report["released"]) == (
        "ci@runner-7 run dead",
        "2026-01-01T00:00:00Z",
        True,
    )
    assert proj.query("SELECT * FROM d1ops_lock", "production") == []
    assert Path(report["report_path"]).is_file() and json.loads(Path(report["report_path"]).read_text())["command"] == (
        "unlock"
    )
    assert proj.run("unlock", "production", "--yes").output == "production is not locked: nothing to release.\n"


def test_an_execute_that_writes_is_a_run_and_a_read_is_not(proj: Proj) -> None:
    write = proj.run("execute", "dev", "--command", "UPDATE users SET name = 'Ada' WHERE id = 1", "--json")
    assert write.exit_code == 0, write.output
    reports = list((proj.root / "backups" / "dev" / "reports").glob("*-execute.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["exit_code"] == 0
    assert proj.query("SELECT name FROM users WHERE id = 1") == [("Ada",)]
    assert proj.query("SELECT * FROM d1ops_lock") == []

    read = proj.run("execute", "production", "--command", "SELECT 1 + 1 AS n", "--json")
    assert read.exit_code == 0, read.output  # protected, no terminal, no --yes: a read runs at once
    assert json.loads(read.stdout)[0]["results"] == [{"n": 2}]
    assert not (proj.root / "backups" / "production").exists()

    refused = proj.run("execute", "production", "--command", "DELETE FROM d1_migrations")
    assert refused.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in refused.output


def test_report_names_are_unique_even_within_one_millisecond() -> None:
    assert len({unique_stamp() for _ in range(1000)}) == 1000
