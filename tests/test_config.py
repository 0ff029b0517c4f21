"""environments.yaml: every error names the file and the key, suggests the closest key, and exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from d1ops.errors import ConfigError
from d1ops.project.config import load_config
from d1ops.sql.rowguard import row_guard_warning
from tests.conftest import THREE_LOCAL_ENVIRONMENTS, THREE_LOCAL_WRANGLER, WRANGLER_VERSION, Proj, make_project


@pytest.fixture
def files(tmp_path: Path) -> Proj:
    return make_project(tmp_path / "p", migrations_from=None)


def test_template_config_loads_with_promotion_order_and_defaults() -> None:
    config = load_config(Path(__file__).parent.parent / "environments.yaml")
    assert config.env_names == ["dev", "staging", "production"]
    prod = config.env("production")
    assert prod.protected and prod.skip == ("0002_sample_data.sql",)
    assert (prod.backup, prod.verify) == ("required", "full")
    assert (config.env("staging").backup, config.env("staging").verify) == ("required", "quick")
    assert config.env("dev").backup == "optional"
    assert prod.binding.database_name == "mvp-database-production"
    assert config.predecessor(prod) == config.env("staging")
    assert config.predecessor(config.env("dev")) is None


def test_unknown_top_level_key_suggests_the_closest(files: Proj) -> None:
    files.config.write_text(THREE_LOCAL_ENVIRONMENTS.replace("backups_dir:", "backup_dir:"))
    result = files.run("status")
    assert result.exit_code == 2
    assert "environments.yaml: unknown key 'backup_dir' (did you mean 'backups_dir'?)" in result.output


def test_unknown_environment_key_names_the_environment(files: Proj) -> None:
    files.config.write_text(THREE_LOCAL_ENVIRONMENTS.replace("protected: true", "protect: true"))
    with pytest.raises(ConfigError) as err:
        load_config(files.config)
    assert str(err.value).startswith(
        "environments.yaml: environments[2]: unknown key 'protect' (did you mean 'protected'?)"
    )


def test_unknown_environment_name_is_exit_2_with_suggestion(files: Proj) -> None:
    result = files.run("status", "stagin")
    assert result.exit_code == 2
    assert "Unknown environment 'stagin' (did you mean 'staging'?)" in result.output


def test_binding_missing_from_an_env_section_is_refused_before_wrangler(files: Proj, monkeypatch) -> None:
    monkeypatch.setenv("D1OPS_WRANGLER", "/nonexistent/wrangler")  # any wrangler call would fail differently
    files.root.joinpath("wrangler.toml").write_text(
        THREE_LOCAL_WRANGLER.replace(
            '[[env.staging.d1_databases]]\nbinding = "DB"', '[[env.staging.d1_databases]]\nbinding = "OTHER"'
        )
    )
    result = files.run("status", "dev")
    assert result.exit_code == 2
    assert (
        "environment 'staging': database 'DB' has no d1_databases entry in [env.staging] of wrangler.toml"
        in result.output
    )


def test_wrangler_env_section_missing_is_refused(files: Proj) -> None:
    files.config.write_text(THREE_LOCAL_ENVIRONMENTS.replace("wrangler_env: staging", "wrangler_env: stage"))
    result = files.run("status")
    assert result.exit_code == 2
    assert "[env.stage] is not in wrangler.toml (did you mean 'staging'?)" in result.output


def test_bad_target_value_lists_choices(files: Proj) -> None:
    files.config.write_text(THREE_LOCAL_ENVIRONMENTS.replace("target: local\n    backup: skip", "target: locale"))
    result = files.run("status")
    assert result.exit_code == 2
    assert "environment 'dev': key 'target' must be one of local, remote (did you mean 'local'?)" in result.output


def test_missing_config_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    from click.testing import CliRunner

    from d1ops.cli import cli

    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 2
    assert f"No environments.yaml in {tmp_path}" in result.output


def test_config_from_environment_variable(files: Proj, monkeypatch) -> None:
    monkeypatch.setenv("D1OPS_CONFIG", str(files.config))
    monkeypatch.setenv("D1OPS_WRANGLER", "/nonexistent/wrangler")
    from click.testing import CliRunner

    from d1ops.cli import cli

    result = CliRunner().invoke(cli, ["status", "nope"])
    assert result.exit_code == 2
    assert "Unknown environment 'nope'" in result.output


def test_missing_wrangler_binary_is_a_clear_error(files: Proj, monkeypatch) -> None:
    monkeypatch.setenv("D1OPS_WRANGLER", str(files.root / "no-such-wrangler"))
    result = files.run("status")
    assert result.exit_code == 1
    assert "D1OPS_WRANGLER points at" in result.output and "not an executable file" in result.output


def test_no_wrangler_anywhere_says_how_to_install(files: Proj, monkeypatch) -> None:
    monkeypatch.delenv("D1OPS_WRANGLER")
    monkeypatch.setenv("PATH", str(files.root))
    result = files.run("status")
    assert result.exit_code == 1
    assert "wrangler not found. Looked at, in order:" in result.output
    assert f"{files.root}/node_modules/.bin/wrangler" in result.output
    assert "`npm install --save-dev wrangler`" in result.output


def test_lint_reports_findings_and_exits_1_on_errors(files: Proj) -> None:
    (files.migrations / "0001_ok.sql").write_text("CREATE TABLE a (id INTEGER PRIMARY KEY);\n")
    files.write("migrations/down/0001_ok.sql", "DROP TABLE a;\n")
    assert files.run("lint").output == "1 migration(s), 0 error(s), 0 warning(s).\n"
    (files.migrations / "0003_tx.sql").write_text("BEGIN TRANSACTION;\nCREATE TABLE b (id INTEGER);\nCOMMIT;\n")
    result = files.run("lint")
    assert result.exit_code == 1
    assert "warning: 0003_tx.sql: leaves a gap after 0001" in result.output
    assert (
        "error: 0003_tx.sql: [transaction-statement] has a transaction statement (BEGIN TRANSACTION;)" in result.output
    )
    migrate = files.run("migrate", "--dry-run")
    assert migrate.exit_code == 2 and "0003_tx.sql: has a transaction statement" in migrate.output


def test_version_reports_d1ops_and_wrangler(files: Proj) -> None:
    result = files.run("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"d1ops 0.1.0, wrangler {WRANGLER_VERSION} (")
    assert "warning" not in result.output  # both ends of the tested range are tested


def test_wrangler_older_than_the_pinned_major_is_refused(files: Proj, monkeypatch) -> None:
    old = files.root / "old-wrangler"
    old.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo 3.114.0; exit 0; fi\necho should-not-run >&2; exit 9\n'
    )
    old.chmod(0o755)
    monkeypatch.setenv("D1OPS_WRANGLER", str(old))
    result = files.run("status")
    assert result.exit_code == 2
    assert "wrangler 3.114.0 is older than the supported major 4" in result.output
    assert "`npm install --save-dev wrangler@" in result.output


def test_wrangler_jsonc_config_with_comments_resolves_bindings(files: Proj) -> None:
    files.root.joinpath("wrangler.jsonc").write_text(
        """{
  // the Worker
  "name": "t",
  "d1_databases": [{"binding": "DB", "database_name": "dev-db", "database_id": "id-dev", /* local */}],
  "env": {"staging": {"d1_databases": [{"binding": "DB", "database_name": "stg", "database_id": "id-stg"}]},
          "production": {"d1_databases": [{"binding": "DB", "database_name": "prd", "database_id": "id-prd"}]}},
}
"""
    )
    files.config.write_text(
        THREE_LOCAL_ENVIRONMENTS.replace("wrangler_config: wrangler.toml", "wrangler_config: wrangler.jsonc")
    )
    config = load_config(files.config)
    assert [e.binding.database_id for e in config.environments] == ["id-dev", "id-stg", "id-prd"]


def test_row_guard_is_on_in_every_environment_by_default_and_off_warns(files: Proj) -> None:
    config = load_config(files.config)
    assert all(e.row_guard and row_guard_warning(e) is None for e in config.environments)
    files.config.write_text(
        THREE_LOCAL_ENVIRONMENTS.replace("    backup: skip\n", "    backup: skip\n    row_guard: false\n")
    )
    dev = load_config(files.config).env("dev")
    assert not dev.row_guard
    assert (row_guard_warning(dev) or "").startswith("row_guard is off for dev")
    files.config.write_text(
        THREE_LOCAL_ENVIRONMENTS.replace("    backup: skip\n", "    backup: skip\n    row_guard: maybe\n")
    )
    with pytest.raises(ConfigError, match="key 'row_guard' must be true or false"):
        load_config(files.config)
