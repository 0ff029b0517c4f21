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


def test_a_drop_of_a_table_the_migrations_do_not_know_asks_for_confirmation_on_production(proj: Proj) -> None:
    project = open_projects(proj.config)[0]
    project.wrangler.execute(project.config.env("production"), command="CREATE TABLE prod_only (id INTEGER)")
    result = proj.run("execute", "production", "--command", "DROP TABLE IF EXISTS prod_only")
    assert result.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in result.output
    assert proj.query("SELECT name FROM sqlite_master WHERE name = 'prod_only'", "production") == [("prod_only",)]


def test_begin_transaction_text_is_stored_exactly_through_execute_and_read_back_exactly(proj: Proj) -> None:
    value = "BEGIN TRANSACTION; keep COMMIT; this"
    wrote = proj.run("execute", "dev", "--command", f"CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('{value}')")
    assert wrote.exit_code == 0, wrote.output
    assert proj.query("SELECT v FROM kept") == [(value,)]
    read = proj.run("execute", "dev", "--command", f"SELECT v, '{value}' AS same FROM kept", "--json")
    assert read.exit_code == 0, read.output
    assert json.loads(read.stdout)[0]["results"] == [{"v": value, "same": value}]
