"""The row guard in the run's batch, on real wrangler: what lint cannot see (a cascade from an explicit DELETE …
WHERE) and the drizzle rebuild once declared."""

from __future__ import annotations

import json

from tests.conftest import Proj
from tests.test_rowguard import PARENT_AND_CHILDREN, REBUILD, ROWS


def with_accounts(proj: Proj) -> Proj:
    proj.write("migrations/0003_accounts.sql", PARENT_AND_CHILDREN + ROWS)
    assert proj.run("migrate", "dev").exit_code == 0
    return proj


def test_a_cascade_lint_cannot_see_fails_the_batch_and_nothing_is_applied(proj: Proj) -> None:
    with_accounts(proj)
    proj.write("migrations/0004_prune.sql", "DELETE FROM accounts WHERE id <= 10;\nCREATE TABLE later (id INTEGER);\n")

    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert "0004_prune.sql would lose data" in error
    assert "members lost 10 rows (ON DELETE CASCADE from DELETE FROM accounts" in error
    assert "notes lost 10 links in account_id (ON DELETE SET NULL" in error
    assert proj.query("SELECT count(*) FROM accounts") == [(500,)]
    assert proj.query("SELECT count(*) FROM members") == [(500,)]
    assert "later" not in proj.tables()
    assert ("0004_prune.sql",) not in proj.query("SELECT name FROM d1_migrations")
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]  # released


def test_the_declared_rebuild_applies_and_an_undeclared_one_never_reaches_the_database(proj: Proj) -> None:
    with_accounts(proj)
    proj.write("migrations/0004_rebuild.sql", REBUILD)
    refused = proj.run("migrate", "dev")
    assert refused.exit_code == 2, refused.output  # lint: fk-drop names the children
    assert "members (ON DELETE CASCADE); notes (ON DELETE SET NULL)" in refused.output

    declared = "-- d1ops: loses rows in members, notes re-linked by 0005\n-- d1ops: destructive rebuild of accounts\n"
    proj.write("migrations/0004_rebuild.sql", declared + REBUILD)
    applied = proj.run("migrate", "dev")

    assert applied.exit_code == 0, applied.output
    assert "plan" in [r[1] for r in proj.query("PRAGMA table_info(accounts)")]
    assert proj.query("SELECT count(*) FROM members") == [(0,)]  # D1 did what the declaration said it would


def test_row_guard_off_warns_in_every_run(proj: Proj) -> None:
    text = proj.config.read_text(encoding="utf-8").replace(
        "    backup: skip\n", "    backup: skip\n    row_guard: false\n", 1
    )
    proj.config.write_text(text, encoding="utf-8")
    result = proj.run("migrate", "dev", "--json")
    assert result.exit_code == 0, result.output
    assert any("row_guard is off for dev" in w for w in json.loads(result.stdout)["warnings"])
