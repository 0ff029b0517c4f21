"""Several D1 databases in one project: migrate, status, backup, prune and restore keep them apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from d1ops.cli import cli
from d1ops.errors import ConfigError
from d1ops.project.config import load_config, load_configs
from tests.conftest import Proj, make_project

TWO_DB_WRANGLER = """\
name = "blog"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "blog-dev"
database_id = "d4d4d4d4-0000-4000-8000-00000000d001"

[[d1_databases]]
binding = "ANALYTICS"
database_name = "blog-analytics-dev"
database_id = "d4d4d4d4-0000-4000-8000-00000000d002"

[env.staging]
[[env.staging.d1_databases]]
binding = "DB"
database_name = "blog-staging"
database_id = "d4d4d4d4-0000-4000-8000-00000000d003"

[[env.staging.d1_databases]]
binding = "ANALYTICS_STAGING"
database_name = "blog-analytics-staging"
database_id = "d4d4d4d4-0000-4000-8000-00000000d004"
"""

TWO_DB_ENVIRONMENTS = """\
databases:
  - name: main
    binding: DB
    migrations_dir: migrations
  - name: analytics
    binding: ANALYTICS
    migrations_dir: analytics-migrations
    environments:
      staging: {binding: ANALYTICS_STAGING}
backups_dir: backups
wrangler_config: wrangler.toml
environments:
  - name: dev
    target: local
  - name: staging
    target: local
    wrangler_env: staging
"""


@pytest.fixture
def two(tmp_path: Path) -> Proj:
    proj = make_project(tmp_path / "blog", wrangler=TWO_DB_WRANGLER, environments=TWO_DB_ENVIRONMENTS)
    proj.write("analytics-migrations/0001_events.sql", "CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT);\n")
    return proj


def test_each_database_resolves_per_environment_with_its_own_folders(two: Proj) -> None:
    main, analytics = load_configs(two.config)
    assert (main.database, analytics.database) == ("main", "analytics")
    assert analytics.env("staging").binding.binding == "ANALYTICS_STAGING"
    assert analytics.env("dev").binding.database_name == "blog-analytics-dev"
    assert analytics.migrations_dir == two.root / "analytics-migrations"
    assert main.env_dir("dev") == two.root / "backups" / "dev" / "main"
    assert analytics.env("dev").database == "analytics"
    with pytest.raises(ConfigError, match="Unknown database 'analytic' \\(did you mean 'analytics'\\?\\)"):
        load_config(two.config, database="analytic")


def test_one_database_file_keeps_todays_backup_paths(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path / "one", migrations_from=None).config)
    assert config.databases == ("DB",) and config.env_dir("dev") == tmp_path / "one" / "backups" / "dev"


def test_missing_binding_error_lists_bindings_and_shows_the_projects_syntax(two: Proj) -> None:
    two.config.write_text(TWO_DB_ENVIRONMENTS.replace("binding: ANALYTICS_STAGING", "binding: ANALYTIC_STAGING"))
    result = two.run("status", "--db", "analytics")
    assert result.exit_code == 2
    assert "database 'ANALYTIC_STAGING' has no d1_databases entry in [env.staging]" in result.output
    assert "(did you mean 'ANALYTICS_STAGING'?)" in result.output
    assert "Bindings found: DB (top level), ANALYTICS (top level), DB (env.staging)" in result.output
    assert '[[env.staging.d1_databases]]\nbinding = "ANALYTIC_STAGING"' in result.output


@pytest.mark.wrangler
def test_migrate_status_backup_prune_and_restore_keep_two_databases_apart(two: Proj) -> None:
    result = two.run("migrate", "dev")
    assert result.exit_code == 0, result.output
    assert "== database main ==" in result.output and "== database analytics ==" in result.output
    assert "Applied 2 migration(s) to dev" in result.output and "Applied 1 migration(s) to dev" in result.output

    result = two.run("status", "--db", "analytics")
    assert result.exit_code == 0, result.output
    assert "0001_events.sql" in result.output and "0001_initial_schema" not in result.output

    assert two.run("backup", "--env", "dev").exit_code == 0  # both databases
    assert two.run("backup", "--env", "dev", "--db", "main").exit_code == 0
    main_dir, analytics_dir = two.root / "backups" / "dev" / "main", two.root / "backups" / "dev" / "analytics"
    analytics_backups = [p for p in analytics_dir.iterdir() if p.name != "reports"]
    assert len(analytics_backups) == 1
    assert len([p for p in main_dir.iterdir() if p.name != "reports"]) == 2

    listed = two.run("backups", "list", "dev")
    assert listed.exit_code == 0 and "DATABASE" in listed.output
    assert listed.output.count("dev  analytics ") == 1 and listed.output.count("dev  main ") == 2

    result = two.run("backups", "prune", "dev", "--keep", "1")  # every database, each on its own
    assert result.exit_code == 0, result.output
    assert "Deleted 1 backup(s) of main in dev." in result.output
    assert "Deleted 0 backup(s) of analytics in dev." in result.output
    assert analytics_backups[0].is_dir()  # the other database's only backup survives

    result = two.run("restore", str(analytics_backups[0]), "--env", "dev", "--db", "main", "--dry-run")
    assert result.exit_code == 2
    assert f"Backup {analytics_backups[0].name} is a backup of database analytics, not main" in result.output
    assert "--db analytics" in result.output


def test_a_command_for_one_database_asks_which(two: Proj) -> None:
    result = two.run("new", "add_tags")
    assert result.exit_code == 2
    assert "This project has several databases (main, analytics): say which with `--db NAME`." in result.output
    result = two.run("new", "add_tags", "--db", "analytics")
    assert result.exit_code == 0 and "analytics-migrations/" in result.output


TWO_BINDINGS_WRANGLER = """\
name = "shared"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "shared-main"
database_id = "d5d5d5d5-0000-4000-8000-00000000d001"

[[d1_databases]]
binding = "DB2"
database_name = "shared-second"
database_id = "d5d5d5d5-0000-4000-8000-00000000d002"
"""


def one_binding_config(binding: str, migrations: str) -> str:
    return (
        f"database: {binding}\nmigrations_dir: {migrations}\nbackups_dir: backups\nwrangler_config: wrangler.toml\n"
        "environments:\n  - name: dev\n    target: local\n"
    )


@pytest.mark.wrangler
def test_two_config_files_sharing_backups_each_prune_keeps_the_other_databases_backups(tmp_path: Path) -> None:
    """One config file per binding, both with backups_dir: backups, so both write into backups/dev/."""
    proj = make_project(
        tmp_path / "shared", wrangler=TWO_BINDINGS_WRANGLER, environments=one_binding_config("DB", "migrations")
    )
    proj.write("second.yaml", one_binding_config("DB2", "second-migrations"))
    proj.write("second-migrations/0001_events.sql", "CREATE TABLE events (id INTEGER PRIMARY KEY);\n")
    runner = CliRunner()

    def run_second(*args: str) -> Result:
        return runner.invoke(cli, ["--config", str(proj.root / "second.yaml"), *args], catch_exceptions=False)

    assert proj.run("migrate", "dev").exit_code == 0
    assert run_second("migrate", "dev").exit_code == 0
    assert run_second("backup", "--env", "dev").exit_code == 0
    for _ in range(2):
        assert proj.run("backup", "--env", "dev").exit_code == 0
    folder = proj.root / "backups" / "dev"

    def backups_of(database: str) -> list[str]:
        return sorted(
            p.name
            for p in folder.iterdir()
            if (p / "manifest.json").is_file() and json.loads((p / "manifest.json").read_text())["database"] == database
        )

    seconds = backups_of("DB2")
    assert len(seconds) == 1 and len(backups_of("DB")) == 2

    result = proj.run("backups", "prune", "dev", "--keep", "1")

    assert result.exit_code == 0, result.output
    assert "Deleted 1 backup(s) of DB in dev." in result.output
    assert backups_of("DB2") == seconds  # the other database's only backup is kept
    mains = backups_of("DB")
    assert len(mains) == 1
    assert run_second("backup", "--env", "dev").exit_code == 0

    result = run_second("backups", "prune", "dev", "--keep", "1")

    assert result.exit_code == 0, result.output
    assert "Deleted 1 backup(s) of DB2 in dev." in result.output
    assert backups_of("DB") == mains
    assert len(backups_of("DB2")) == 1 and backups_of("DB2") != seconds
