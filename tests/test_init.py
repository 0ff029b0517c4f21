"""d1ops init in existing Workers projects: wrangler.jsonc with comments, wrangler.json with staging and
production, wrangler.toml with two D1 bindings. Each written config passes doctor and `migrate dev` uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from d1ops.cli import cli
from d1ops.errors import ConfigError
from d1ops.project.config import load_configs
from d1ops.project.init import init_project
from d1ops.project.migrations import discover_migrations
from tests.conftest import REPO, Proj

JSONC_NO_ENV = """\
// A Worker with one D1 database and no env sections, as `npm create cloudflare` writes it.
{
  "name": "notes",
  "main": "src/index.ts", /* the Worker */
  "compatibility_date": "2025-01-01",
  "d1_databases": [
    {
      "binding": "D1", // what the code calls env.D1
      "database_name": "notes-db",
      "database_id": "7f3c2a10-5d4e-4b6a-9c8d-1e2f3a4b5c6d",
    },
  ],
}
"""

JSON_STAGING_PRODUCTION = """\
{
  "name": "shop",
  "compatibility_date": "2025-01-01",
  "d1_databases": [
    {"binding": "DB", "database_name": "shop-dev", "database_id": "a1a1a1a1-0000-4000-8000-00000000a001"}
  ],
  "env": {
    "production": {
      "d1_databases": [{"binding": "DB", "database_name": "shop-prod", "database_id": "<your-database-id>"}]
    },
    "staging": {
      "d1_databases": [{"binding": "DB", "database_name": "shop-staging",
                        "database_id": "a1a1a1a1-0000-4000-8000-00000000a002"}]
    }
  }
}
"""

TOML_TWO_BINDINGS = """\
name = "blog"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "blog-content"
database_id = "b2b2b2b2-0000-4000-8000-00000000b001"
migrations_dir = "migrations"

[[d1_databases]]
binding = "ANALYTICS"
database_name = "blog-analytics"
database_id = "b2b2b2b2-0000-4000-8000-00000000b002"
migrations_dir = "analytics-migrations"
"""


def _project(root: Path, name: str, text: str, *, analytics: bool = False) -> Proj:
    root.mkdir(parents=True)
    (root / name).write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "migrations", root / "migrations")
    if analytics:
        (root / "analytics-migrations").mkdir()
        (root / "analytics-migrations" / "0001_events.sql").write_text(
            "CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT NOT NULL);\n", encoding="utf-8"
        )
    return Proj(root)


def _run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(root / "environments.yaml"), *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.wrangler
@pytest.mark.parametrize(
    ("name", "text", "analytics"),
    [
        ("wrangler.jsonc", JSONC_NO_ENV, False),
        ("wrangler.json", JSON_STAGING_PRODUCTION, False),
        ("wrangler.toml", TOML_TWO_BINDINGS, True),
    ],
)
def test_init_writes_a_config_doctor_passes_and_migrate_dev_uses(
    tmp_path: Path, name: str, text: str, analytics: bool
) -> None:
    proj = _project(tmp_path / "worker", name, text, analytics=analytics)
    code, out = _run(proj.root, "init")
    assert code == 0, out
    assert f"Wrote environments.yaml from {name}" in out
    assert "backups/" in (proj.root / ".gitignore").read_text()

    code, out = _run(proj.root, "doctor")
    assert code == 0, out
    assert "FAIL" not in out

    code, out = _run(proj.root, "migrate", "dev")
    assert code == 0, out
    assert "Applied 2 migration(s) to dev" in out
    if analytics:
        assert "Applied 1 migration(s) to dev" in out  # the second database, from its own folder

    before = proj.config.read_text()
    code, out = _run(proj.root, "init")
    assert code == 2
    assert "already exists; nothing was written" in out
    assert proj.config.read_text() == before


def test_init_orders_environments_protects_production_and_flags_placeholders(tmp_path: Path) -> None:
    proj = _project(tmp_path / "shop", "wrangler.json", JSON_STAGING_PRODUCTION)
    result = init_project(proj.root)
    raw = yaml.safe_load(proj.config.read_text())
    assert [e["name"] for e in raw["environments"]] == ["dev", "staging", "production"]
    assert raw["environments"][0] == {"name": "dev", "target": "local"}
    production = raw["environments"][2]
    assert production["protected"] is True and production["skip"] == ["0002_sample_data.sql"]
    assert "protected" not in raw["environments"][1]
    assert raw["baseline"] == "0002_sample_data.sql" and raw["wrangler_config"] == "wrangler.json"
    assert any("DB in [env.production] has a placeholder database_id (<your-database-id>)" in n for n in result.notes)


def test_init_says_when_the_top_level_looks_like_production_and_can_make_it_so(tmp_path: Path) -> None:
    text = TOML_TWO_BINDINGS.replace("blog-content", "blog-production").split('[[d1_databases]]\nbinding = "ANA')[0]
    proj = _project(tmp_path / "blog", "wrangler.toml", text)
    result = init_project(proj.root)
    assert any("looks like production" in n and "--top-level production" in n for n in result.notes)
    assert [e.name for e in load_configs(proj.config)[0].environments] == ["dev"]

    init_project(proj.root, force=True, top_level="production")
    config = load_configs(proj.config)[0]
    production = config.env("production")
    assert production.is_remote and production.protected and production.wrangler_env is None
    assert production.binding.database_name == "blog-production"


def test_init_pairs_bindings_that_differ_per_environment(tmp_path: Path) -> None:
    text = """\
name = "app"
[[d1_databases]]
binding = "DB_DEV"
database_name = "app-dev"
database_id = "c3c3c3c3-0000-4000-8000-00000000c001"

[env.production]
[[env.production.d1_databases]]
binding = "DB_PROD"
database_name = "app-prod"
database_id = "c3c3c3c3-0000-4000-8000-00000000c002"
"""
    proj = _project(tmp_path / "app", "wrangler.toml", text)
    result = init_project(proj.root)
    assert any("DB_DEV is DB_PROD in [env.production]" in n for n in result.notes)
    config = load_configs(proj.config)[0]
    assert config.env("dev").binding.binding == "DB_DEV"
    assert config.env("production").binding.binding == "DB_PROD"
    assert config.env("production").binding.database_name == "app-prod"


def test_init_adds_backups_to_gitignore_once_and_refuses_without_a_wrangler_config(tmp_path: Path) -> None:
    proj = _project(tmp_path / "w", "wrangler.jsonc", JSONC_NO_ENV)
    (proj.root / ".gitignore").write_text("node_modules", encoding="utf-8")  # no trailing newline
    init_project(proj.root)
    init_project(proj.root, force=True)
    assert (proj.root / ".gitignore").read_text().splitlines().count("backups/") == 1
    assert (proj.root / ".gitignore").read_text().startswith("node_modules\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _run(empty, "init")
    assert code == 2
    assert "No wrangler.json, wrangler.jsonc or wrangler.toml in" in out


def test_baseline_and_duplicate_errors_suggest_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in ("0001_init.sql", "0002_a.sql", "0002_b.sql"):
        (folder / name).write_text("SELECT 1;\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="0001_init is not a file in migrations/. Did you mean '0001_init.sql'?"):
        discover_migrations(folder, "0001_init")
    duplicate = [f for f in discover_migrations(folder).errors if f.file == "0002_b.sql"]
    assert "do not rename them (wrangler tracks them by name): set `baseline: 0002_b.sql`" in duplicate[0].message
    assert not discover_migrations(folder, "0002_b.sql").errors


TOML_ANALYTICS_NOT_IN_STAGING = """\
name = "blog"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "blog-content"
database_id = "d4d4d4d4-0000-4000-8000-00000000d001"

[[d1_databases]]
binding = "ANALYTICS"
database_name = "blog-analytics"
database_id = "d4d4d4d4-0000-4000-8000-00000000d002"
migrations_dir = "analytics-migrations"

[env.staging]
[[env.staging.d1_databases]]
binding = "DB"
database_name = "blog-content-staging"
database_id = "d4d4d4d4-0000-4000-8000-00000000d003"

[env.production]
[[env.production.d1_databases]]
binding = "DB"
database_name = "blog-content-production"
database_id = "d4d4d4d4-0000-4000-8000-00000000d004"
[[env.production.d1_databases]]
binding = "ANALYTICS"
database_name = "blog-analytics-production"
database_id = "d4d4d4d4-0000-4000-8000-00000000d005"
"""


@pytest.mark.wrangler
def test_init_refuses_a_binding_missing_from_one_env_and_says_what_to_add(tmp_path: Path) -> None:
    proj = _project(tmp_path / "blog", "wrangler.toml", TOML_ANALYTICS_NOT_IN_STAGING, analytics=True)

    code, out = _run(proj.root, "init")

    assert code == 2, out
    assert "lacks a d1_databases entry d1ops needs: ANALYTICS in [env.staging]" in out
    assert "nothing was written" in out
    snippet = '[[env.staging.d1_databases]]\nbinding = "ANALYTICS"\ndatabase_name = "<name>"\n'
    assert snippet in out and "then run `d1ops init` again" in out
    assert not proj.config.exists()

    added = (
        snippet.replace("<name>", "blog-analytics-staging") + 'database_id = "d4d4d4d4-0000-4000-8000-00000000d006"\n'
    )
    with (proj.root / "wrangler.toml").open("a", encoding="utf-8") as handle:
        handle.write(added)
    code, out = _run(proj.root, "init")
    assert code == 0, out
    code, out = _run(proj.root, "migrate", "dev")  # the written config loads, and real wrangler applies it
    assert code == 0, out
    assert "Applied 2 migration(s) to dev" in out and "Applied 1 migration(s) to dev" in out


@pytest.mark.parametrize(
    ("change", "sign"),
    [
        (
            (
                'compatibility_date = "2025-01-01"',
                'compatibility_date = "2025-01-01"\n[vars]\nENVIRONMENT = "production"',
            ),
            'vars ENVIRONMENT = "production"',
        ),
        (('name = "blog"', 'name = "blog-production"'), 'worker name "blog-production"'),
    ],
)
def test_init_flags_a_top_level_whose_vars_or_worker_name_say_production(
    tmp_path: Path, change: tuple[str, str], sign: str
) -> None:
    text = TOML_TWO_BINDINGS.split('[[d1_databases]]\nbinding = "ANA')[0].replace(*change, 1)
    proj = _project(tmp_path / "blog", "wrangler.toml", text)
    result = init_project(proj.root)
    assert any(f"looks like production ({sign})" in n and "--top-level production" in n for n in result.notes)
