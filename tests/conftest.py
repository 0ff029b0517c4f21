"""Shared test setup: real wrangler, real local D1, temporary projects.

Every wrangler call costs ~1 s, so a migrated template project is built once per test session (per xdist
worker) and copied, local D1 state included, into each test's tmp_path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sqlite3
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from d1ops.cli import cli
from d1ops.wrangler.locate import version_from_package
from tests.cloudflare.fixture import cloudflare_api  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
# The wrangler under test: the pinned one (package.json), or another one named by D1OPS_WRANGLER when the
# suite starts (`make test-wrangler-latest` names the newest, with its Node first on PATH).
WRANGLER = Path(os.environ.get("D1OPS_WRANGLER") or REPO / "node_modules" / ".bin" / "wrangler").absolute()
WRANGLER_VERSION = version_from_package(str(WRANGLER)) or "unknown"
LOCAL_D1 = Path(".wrangler") / "state" / "v3" / "d1" / "miniflare-D1DatabaseObject"

DB_IDS = {
    "dev": "00000000-0000-4000-8000-0000000000d1",
    "staging": "00000000-0000-4000-8000-0000000000d2",
    "production": "00000000-0000-4000-8000-0000000000d3",
}

THREE_LOCAL_WRANGLER = f"""\
name = "d1ops-test"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "test-dev"
database_id = "{DB_IDS["dev"]}"

[env.staging]
[[env.staging.d1_databases]]
binding = "DB"
database_name = "test-staging"
database_id = "{DB_IDS["staging"]}"

[env.production]
[[env.production.d1_databases]]
binding = "DB"
database_name = "test-production"
database_id = "{DB_IDS["production"]}"
"""

THREE_LOCAL_ENVIRONMENTS = """\
database: DB
migrations_dir: migrations
backups_dir: backups
wrangler_config: wrangler.toml
default_env: dev
environments:
  - name: dev
    target: local
    backup: skip
  - name: staging
    target: local
    wrangler_env: staging
  - name: production
    target: local
    wrangler_env: production
    protected: true
    skip: ["0002_sample_data.sql"]
"""


@pytest.fixture(autouse=True)
def _wrangler_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point d1ops at the pinned wrangler; keep wrangler quiet, offline and its logs out of $HOME."""
    assert WRANGLER.exists(), f"{WRANGLER} does not exist: run `npm ci` (make install) first"
    monkeypatch.setenv("D1OPS_WRANGLER", str(WRANGLER))
    monkeypatch.setenv("WRANGLER_LOG_PATH", str(tmp_path / "wrangler-logs"))
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("D1OPS_YES", raising=False)
    monkeypatch.delenv("D1OPS_CONFIG", raising=False)
    for var in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@dataclass
class Proj:
    """A temporary d1ops project: files on disk, its local D1 databases, and a way to run the CLI."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "environments.yaml"

    @property
    def migrations(self) -> Path:
        return self.root / "migrations"

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, ["--config", str(self.config), *args], input=input, env=env, catch_exceptions=False)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def sqlite_path(self, env: str = "dev") -> Path:
        """The local D1's SQLite file of an environment (for read-only checks beside wrangler)."""
        files = [p for p in (self.root / LOCAL_D1).glob("*.sqlite") if p.name != "metadata.sqlite"]
        wanted = _miniflare_name(DB_IDS[env])
        for path in files:
            if path.stem == wanted:
                return path
        raise AssertionError(f"no local D1 file for {env} among {[p.name for p in files]}")

    def query(self, sql: str, env: str = "dev") -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.sqlite_path(env)}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def tables(self, env: str = "dev") -> set[str]:
        """The application's tables (tracking tables left out)."""
        try:
            rows = self.query("SELECT name FROM sqlite_master WHERE type='table'", env)
        except AssertionError:
            return set()
        return {r[0] for r in rows if not r[0].startswith(("sqlite_", "_cf_", "d1ops_")) and r[0] != "d1_migrations"}


def _miniflare_name(database_id: str) -> str:
    """The file name miniflare gives a local D1: its durable-object id for the database id (miniflare's
    durableObjectNamespaceIdFromName("miniflare-D1DatabaseObject", id)), so no probing process is needed."""
    key = hashlib.sha256(b"miniflare-D1DatabaseObject").digest()
    name_mac = hmac.new(key, database_id.encode(), "sha256").digest()[:16]
    return (name_mac + hmac.new(key, name_mac, "sha256").digest()[:16]).hex()


def make_project(
    root: Path,
    *,
    wrangler: str = THREE_LOCAL_WRANGLER,
    environments: str = THREE_LOCAL_ENVIRONMENTS,
    migrations_from: Path | None = REPO / "migrations",
) -> Proj:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wrangler.toml").write_text(wrangler, encoding="utf-8")
    (root / "environments.yaml").write_text(environments, encoding="utf-8")
    (root / "migrations").mkdir(exist_ok=True)
    if migrations_from is not None:
        for path in migrations_from.glob("*.sql"):
            shutil.copy(path, root / "migrations" / path.name)
        if (migrations_from / "down").is_dir():
            shutil.copytree(migrations_from / "down", root / "migrations" / "down", dirs_exist_ok=True)
    return Proj(root)


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MVP template (migrations 0001, 0002) migrated on dev, built once per session."""
    os.environ.setdefault("D1OPS_WRANGLER", str(WRANGLER))
    root = tmp_path_factory.mktemp("template")
    proj = make_project(root)
    result = proj.run("migrate", "dev")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def proj(tmp_path: Path, template_dir: Path) -> Iterator[Proj]:
    """A copy of the migrated template project (dev has 0001 and 0002) in this test's tmp_path."""
    root = tmp_path / "project"
    shutil.copytree(template_dir, root, ignore=shutil.ignore_patterns("backups"))
    yield Proj(root)


@pytest.fixture
def empty_proj(tmp_path: Path, template_dir: Path) -> Proj:
    """The template's files, no database touched yet."""
    del template_dir
    return make_project(tmp_path / "project")
