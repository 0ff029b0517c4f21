"""`execute` on a protected environment: read-only SQL (SQLite's authorizer decides, against the migrations'
schema) runs at once, without --yes and without a terminal; SQL that can write is refused there."""

from __future__ import annotations

import json

from d1ops.project.project import open_projects
from tests.conftest import Proj


def test_read_only_execute_on_production_runs_without_yes_or_terminal_and_a_write_is_refused(proj: Proj) -> None:
    project = open_projects(proj.config)[0]
    project.wrangler.execute(
        project.config.env("production"),
        command="CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT); INSERT INTO users VALUES (1, 'a'), (2, 'b')",
    )

    read = proj.run("execute", "production", "--command", "SELECT count(*) AS n FROM users", "--json")
    assert read.exit_code == 0, read.output
    assert json.loads(read.stdout)[0]["results"] == [{"n": 2}]
    assert "protected" not in read.output
    assert not (proj.root / "backups" / "production" / "reports").exists()  # a read is not a run: no report

    text = proj.run("execute", "production", "--command", "SELECT email FROM users ORDER BY id; SELECT 1 AS one")
    assert text.exit_code == 0
    assert "2 statement(s) executed on production." in text.output

    write = proj.run("execute", "production", "--command", "DELETE FROM users")
    assert write.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in write.output
    assert "--yes" in write.output
    assert proj.query("SELECT count(*) FROM users", "production") == [(2,)]
    assert proj.query("SELECT count(*) FROM d1ops_lock", "production") == [(0,)]  # the refused run let go
