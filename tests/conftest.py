"""Shared test setup: real wrangler, real local D1, temporary projects.

Every wrangler call costs ~1 s, so a migrated template project is built once per test session (per xdist
worker) and copied, local D1 state included, into each test's tmp_path.

Every wrangler process the suite starts is counted: `WRANGLER` is a one-line wrapper around the pinned binary
that appends a line to $D1OPS_TEST_WRANGLER_LOG (one file per xdist worker) and execs the real one, so calls made
by d1ops in a subprocess or by a test itself are counted too. Each test's count travels in its report
(user_properties), and the session ends with the total and the tests that start the most processes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sqlite3
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from d1ops.cli import cli
from d1ops.project.config import load_config
from d1ops.wrangler.locate import version_from_package
from d1ops.wrangler.runner import Wrangler
from tests.cloudflare.fixture import api, cloudflare_api  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
# The wrangler under test: the pinned one (package.json), or another one named by D1OPS_WRANGLER when the
# suite starts (`make test-wrangler-latest` names the newest, with its Node first on PATH).
REAL_WRANGLER = Path(os.environ.get("D1OPS_WRANGLER") or REPO / "node_modules" / ".bin" / "wrangler").absolute()
WRANGLER_VERSION = version_from_package(str(REAL_WRANGLER)) or "unknown"
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


COUNT_LOG = "D1OPS_TEST_WRANGLER_LOG"
COUNTING_SCRIPT = """#!/bin/sh
if [ -n "$D1OPS_TEST_WRANGLER_LOG" ]; then
  printf '@ %s %s %s %s %s %s %s\\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" >> "$D1OPS_TEST_WRANGLER_LOG"
fi
exec "{real}" "$@"
"""


def _counting_wrangler() -> Path:
    """The wrapper that counts each wrangler process. It sits in a folder named like the wrangler package, with
    that package's package.json, so d1ops reads its version without a `--version` process, as it does for the
    real binary."""
    digest = hashlib.sha256(str(REAL_WRANGLER).encode()).hexdigest()[:12]
    package = Path(tempfile.gettempdir()) / f"d1ops-tests-{os.getuid()}-{digest}" / "wrangler"
    path = package / "bin" / "wrangler"
    script = COUNTING_SCRIPT.format(real=REAL_WRANGLER)
    manifest = package / "package.json"
    real_manifest = REAL_WRANGLER.resolve().parent.parent / "package.json"
    if path.is_file() and path.read_text(encoding="utf-8") == script and manifest.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((manifest, real_manifest.read_text(encoding="utf-8")), (path, script)):
        fresh = target.with_name(f".{target.name}.{os.getpid()}")
        fresh.write_text(text, encoding="utf-8")
        fresh.chmod(0o755)
        fresh.replace(target)  # atomic: xdist workers may write it at once
    return path


WRANGLER = _counting_wrangler() if REAL_WRANGLER.exists() else REAL_WRANGLER


def _counted() -> int:
    log = os.environ.get(COUNT_LOG)
    try:
        with open(log or "", "rb") as handle:
            return sum(1 for line in handle if line.startswith(b"@ "))  # one such line per process
    except OSError:
        return 0


_PER_TEST: dict[str, int] = {}  # on the controller (or the only process): each test's wrangler processes
_STARTED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ[COUNT_LOG] = str(Path(tempfile.mkdtemp(prefix=f"d1ops-count-{worker}-")) / "wrangler.log")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    item.stash[_STARTED] = _counted()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    if call.when == "teardown":  # the teardown has run: the test's processes, its setup's included, all started
        item.user_properties.append(("wrangler_processes", _counted() - item.stash.get(_STARTED, 0)))
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for key, value in report.user_properties:
            if key == "wrangler_processes":
                _PER_TEST[report.nodeid] = int(value)  # type: ignore[call-overload]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The session's total of wrangler processes (a session-scoped template's build is in its first user's);
    every test's count is kept in pytest's cache (`d1ops/wrangler_processes`)."""
    if not _PER_TEST:
        return
    if getattr(config, "cache", None) is not None:
        config.cache.set("d1ops/wrangler_processes", dict(sorted(_PER_TEST.items())))
    ranked = sorted(_PER_TEST.items(), key=lambda kv: -kv[1])
    terminalreporter.section("wrangler processes")
    for nodeid, count in ranked[:15]:
        if count:
            terminalreporter.write_line(f"{count:4d}  {nodeid}")
    none = sum(1 for _, count in ranked if count == 0)
    terminalreporter.write_line(
        f"wrangler processes started: {sum(_PER_TEST.values())} by {len(ranked)} tests ({none} started none)"
    )


# Fixtures whose tests start wrangler: such a test is marked `wrangler` (conftest's collection hook), and so is
# every test of a module that says `pytestmark = pytest.mark.wrangler` or a test marked so itself. `make test-fast`
# runs the rest (`-m "not wrangler"`); a test not marked that starts wrangler fails, so the fast tier stays fast.
WRANGLER_FIXTURES = {"template_dir", "staged_dir", "proj", "staged_proj", "empty_proj", "cloudflare_api"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if WRANGLER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.wrangler)


@pytest.fixture(autouse=True)
def _wrangler_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _counted()
    yield
    started = _counted() - before
    if started and request.node.get_closest_marker("wrangler") is None:
        pytest.fail(
            f"{request.node.nodeid} started {started} wrangler process(es) but is not marked `wrangler`: mark it "
            "(@pytest.mark.wrangler) so that `make test-fast` leaves it out",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _wrangler_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point d1ops at the pinned wrangler; keep wrangler quiet, offline and its logs out of $HOME."""
    assert REAL_WRANGLER.exists(), f"{REAL_WRANGLER} does not exist: run `npm ci` (make install) first"
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

    def sql(self, script: str, env: str = "dev") -> None:
        """Change a local database behind d1ops' back, as an application (or a mistake) would.

        Written with Python's sqlite3 into the local D1's file: no wrangler process, for tests about what d1ops
        does with the data, not about how wrangler writes it. The script runs as one transaction with foreign keys
        enforced, as `wrangler d1 execute` runs it. A database wrangler has not created yet has no file: only then
        is the script sent through wrangler (one process), so that miniflare creates the file itself.
        """
        try:
            path = self.sqlite_path(env)
        except AssertionError:
            self.wrangler_sql(script, env)
            return
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN")
            try:
                for statement in _statements(script):
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def wrangler_sql(self, script: str, env: str = "dev") -> None:
        """The same change sent through `wrangler d1 execute` (one process): where the values must be the ones
        D1's own SQL parser makes of the text (a REAL literal such as -1.5e-300 parses to another double there)."""
        config = load_config(self.config)
        Wrangler(config.root, config.wrangler_config).execute(config.env(env), command=script)

    def tables(self, env: str = "dev") -> set[str]:
        """The application's tables (tracking tables left out)."""
        try:
            rows = self.query("SELECT name FROM sqlite_master WHERE type='table'", env)
        except AssertionError:
            return set()
        return {r[0] for r in rows if not r[0].startswith(("sqlite_", "_cf_", "d1ops_")) and r[0] != "d1_migrations"}


def _statements(script: str) -> list[str]:
    """The complete statements of a script, in order (sqlite3.complete_statement decides where one ends)."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \t\n;"):
        raise AssertionError(f"incomplete SQL at the end of the script: {current.strip()[:200]}")
    return statements


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


@pytest.fixture(scope="session")
def staged_dir(tmp_path_factory: pytest.TempPathFactory, template_dir: Path) -> Path:
    """The template promoted to staging too (dev and staging have 0001 and 0002), built once per session."""
    root = tmp_path_factory.mktemp("staged") / "project"
    shutil.copytree(template_dir, root, ignore=shutil.ignore_patterns("backups"))
    result = Proj(root).run("promote", "--to", "staging")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def staged_proj(tmp_path: Path, staged_dir: Path) -> Iterator[Proj]:
    """A copy of the template promoted to staging: dev and staging have 0001 and 0002, production nothing."""
    root = tmp_path / "project"
    shutil.copytree(staged_dir, root, ignore=shutil.ignore_patterns("backups"))
    yield Proj(root)


@pytest.fixture
def empty_proj(tmp_path: Path, template_dir: Path) -> Proj:
    """The template's files, no database touched yet."""
    del template_dir
    return make_project(tmp_path / "project")
