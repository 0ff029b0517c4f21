"""Promotion dev → staging → production: gates, drift, skip lists, protected confirmation, run reports.

Three local environments in one temporary project (separate [env.X] databases), real wrangler.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import REPO, Proj


def test_promote_dev_to_staging_to_production(proj: Proj) -> None:
    staging = proj.run("promote", "--json")  # default target: the first environment behind its predecessor
    assert staging.exit_code == 0, staging.output
    report = json.loads(staging.stdout)
    assert report["env"] == "staging" and report["command"] == "promote"
    assert report["plan"] == ["0001_initial_schema.sql", "0002_sample_data.sql"]
    assert report["backup"] == {"skipped": "the database holds no tables yet: nothing to back up"}

    production = proj.run("promote", "--to", "production", "--yes", "--json")
    assert production.exit_code == 0, production.output
    report = json.loads(production.stdout)
    assert report["plan"] == ["0001_initial_schema.sql"]
    assert report["skipped"] == ["0002_sample_data.sql"]
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [("0001_initial_schema.sql", "applied")]
    assert report["exit_code"] == 0 and report["wrangler_processes"] >= 4
    assert Path(report["report_path"]).is_file()

    # production's skip list keeps sample data out of it; dev and staging have it
    assert proj.query("SELECT count(*) FROM users", "dev") == [(4,)]
    assert proj.query("SELECT count(*) FROM users", "staging") == [(4,)]
    assert proj.query("SELECT count(*) FROM users", "production") == [(0,)]

    matrix = proj.run("status", "--all", "--json")
    data = json.loads(matrix.stdout)
    assert data["summary"]["production"]["skipped"] == 1
    assert data["summary"]["staging"]["applied"] == 2
    assert data["wrangler_processes"] == 3
    assert proj.run("status", "--all", "--check").exit_code == 0
    assert proj.run("promote").exit_code == 2  # nothing left to promote


def test_production_refuses_a_migration_that_skipped_staging(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    assert proj.run("promote", "--to", "production", "--yes").exit_code == 0
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    assert proj.run("migrate", "dev").exit_code == 0

    result = proj.run("migrate", "production", "--yes")
    assert result.exit_code == 1
    assert "Promotion order is dev → staging → production: refusing to migrate production." in result.output
    assert "0003_tags.sql is not applied to staging" in result.output
    assert "`d1ops promote --to staging`" in result.output
    assert "tags" not in proj.tables("production")
    assert proj.query("SELECT count(*) FROM d1ops_lock", "production") == [(0,)]

    again = proj.run("promote", "--to", "staging")
    assert again.exit_code == 0, again.output
    assert proj.run("migrate", "production", "--yes").exit_code == 0
    assert "tags" in proj.tables("production")


def test_promote_applies_only_what_the_predecessor_has(proj: Proj) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")  # on disk, not on dev
    result = proj.run("promote", "--to", "staging", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plan"] == ["0001_initial_schema.sql", "0002_sample_data.sql"]
    assert "tags" not in proj.tables("staging")


def test_edited_applied_migration_blocks_promotion_everywhere(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    path = proj.migrations / "0001_initial_schema.sql"
    path.write_text(path.read_text() + "\n-- an innocent-looking edit\n")

    for args in (["migrate", "dev"], ["promote", "--to", "staging"], ["promote", "--to", "production", "--yes"]):
        result = proj.run(*args)
        assert result.exit_code == 1, args
        assert "checksum drift" in result.output
        assert "0001_initial_schema.sql: file is " in result.output
        assert "dev has " in result.output
        # migrate/promote read the target and the environments before it (dev never reaches for remote ones)
        assert ("staging has " in result.output) == (args[0] == "promote")
    assert proj.tables("production") == set()

    matrix = proj.run("status", "--all")
    assert "drifted" in matrix.output
    assert proj.run("status", "--all", "--check").exit_code == 3


def test_protected_environment_needs_typed_name_or_yes(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    refused = proj.run("promote", "--to", "production")
    assert refused.exit_code == 1
    assert "production is protected and there is no terminal to confirm on" in refused.output
    assert proj.tables("production") == set()

    via_env = proj.run("promote", "--to", "production", env={"D1OPS_YES": "1"})
    assert via_env.exit_code == 0, via_env.output
    assert "users" in proj.tables("production")


def test_dry_run_of_promote_shows_plan_and_backup_and_changes_nothing(proj: Proj) -> None:
    result = proj.run("promote", "--to", "staging", "--dry-run")
    assert result.exit_code == 0
    assert "2 migration(s) would be applied" in result.output
    assert "Would take a backup first (required" not in result.output  # staging here is local: optional
    assert "Would take a backup first (optional, verify quick)" in result.output
    assert proj.tables("staging") == set()


def test_run_report_is_filed_with_the_backup(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    assert proj.run("migrate", "dev").exit_code == 0
    result = proj.run("promote", "--to", "staging", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    backup = Path(report["backup"]["path"])
    assert report["backup"]["verified"] is True and len(report["backup"]["sha256"]) == 64
    filed = json.loads((backup / "report.json").read_text())
    assert filed["plan"] == ["0003_tags.sql"] and filed["backup"]["path"] == str(backup)
    assert json.loads(Path(report["report_path"]).read_text())["migrations"][0]["result"] == "applied"


def test_make_migrate_prod_refuses_without_yes_and_runs_with_d1ops_yes(staged_proj: Proj) -> None:
    proj = staged_proj  # promoted to staging (conftest)
    env = {k: v for k, v in os.environ.items() if k != "D1OPS_YES"}
    env["D1OPS_CONFIG"] = str(proj.config)

    def make(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", "migrate-prod"],
            cwd=REPO,
            env={**env, **extra},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )

    refused = make({})
    assert refused.returncode != 0
    assert "production is protected and there is no terminal to confirm on" in refused.stderr
    assert proj.tables("production") == set()

    done = make({"D1OPS_YES": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Applied 1 migration(s) to production" in done.stdout
    assert "users" in proj.tables("production")
    assert proj.query("SELECT count(*) FROM users", "production") == [(0,)]
