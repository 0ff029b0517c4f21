"""Remote environments for real: the pinned wrangler against the loopback Cloudflare D1 API.

d1ops runs unchanged: only CLOUDFLARE_API_BASE_URL / CLOUDFLARE_API_TOKEN / CLOUDFLARE_ACCOUNT_ID differ from a
production run. Every wrangler process costs ~1 s, so each test keeps its commands few (staging is the only
environment unless the promotion order is the point, and `backup: skip` where no backup is looked at).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from pytest_mock import MockerFixture

from d1ops.project.config import load_config
from d1ops.wrangler.runner import Wrangler
from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import DB_IDS, Proj, make_project

MVP_TABLES = {"users", "sessions", "api_keys", "posts", "audit_logs", "settings"}
MVP_MIGRATIONS = ["0001_initial_schema.sql", "0002_sample_data.sql"]
PLACEHOLDER_ID = "00000000-0000-4000-8000-00000000cafe"


def remote_wrangler_toml(staging_id: str, *, staging_block: str | None = None) -> str:
    """dev local (the conftest's dev id), staging remote: database app-staging with the given database_id."""
    block = staging_block or (
        f'[[env.staging.d1_databases]]\nbinding = "DB"\ndatabase_name = "app-staging"\ndatabase_id = "{staging_id}"\n'
    )
    return (
        'name = "d1ops-remote-test"\ncompatibility_date = "2025-01-01"\n\n'
        f'[[d1_databases]]\nbinding = "DB"\ndatabase_name = "app-dev"\ndatabase_id = "{DB_IDS["dev"]}"\n\n'
        f'[env.staging]\nname = "d1ops-remote-test-staging"\n\n{block}'
    )


DEV_THEN_STAGING = """\
database: DB
environments:
  - name: dev
    target: local
    backup: skip
  - name: staging
    target: remote
    wrangler_env: staging
"""

# staging first: no local environment to read or gate on, so a test pays only for its remote calls
STAGING_ONLY = """\
database: DB
environments:
  - name: staging
    target: remote
    wrangler_env: staging
"""
STAGING_ONLY_NO_BACKUP = STAGING_ONLY + "    backup: skip\n"


@pytest.fixture
def api(cloudflare_api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch) -> CloudflareAPI:
    """The fake API, with the environment d1ops (and so wrangler) runs under pointed at it."""
    for key, value in cloudflare_api.env.items():
        monkeypatch.setenv(key, value)
    return cloudflare_api


@pytest.fixture
def wrangler_spy(mocker: MockerFixture) -> Any:
    """A spy on the seam: every wrangler call d1ops makes is recorded, and the real call still runs."""
    return mocker.spy(Wrangler, "run")


def argv_of(spy: Any) -> list[list[str]]:
    """The arguments of each wrangler call the spy saw, in order (args[0] is the Wrangler)."""
    return [list(call.args[1]) for call in spy.call_args_list]


def staging_project(tmp_path: Path, api: CloudflareAPI, environments: str = STAGING_ONLY) -> tuple[Proj, str]:
    uuid = api.server.create_database("app-staging")
    proj = make_project(tmp_path / "project", wrangler=remote_wrangler_toml(uuid), environments=environments)
    return proj, uuid


def tables_on_server(api: CloudflareAPI, uuid: str) -> set[str]:
    rows = api.server.execute(uuid, "SELECT name FROM sqlite_master WHERE type = 'table'")[0]["results"]
    return {r["name"] for r in rows if not r["name"].startswith(("sqlite_", "_cf_"))}


def api_calls(api: CloudflareAPI, since: int = 0) -> list[tuple[str, str]]:
    """(method, last path segments) of the API requests, e.g. ("POST", "query"), ("POST", "import:init")."""
    calls = []
    for request in api.server.requests[since:]:
        path = request["path"]
        if path.startswith("/upload/"):
            calls.append((request["method"], "upload"))
            continue
        if path.startswith("/download/"):
            calls.append((request["method"], "download"))
            continue
        tail = path.split("/d1/database", 1)[-1].strip("/").split("/")[1:] if "/d1/database" in path else [path]
        name = "/".join(tail) or "database"
        action = (request["json"] or {}).get("action") if isinstance(request["json"], dict) else None
        calls.append((request["method"], f"{name}:{action}" if action else name))
    return calls


def output_of(result: Result) -> str:
    return result.stdout + result.stderr


# -- create, info, list ---------------------------------------------------------------------------------------------
def test_create_tells_the_database_id_and_write_config_records_it(tmp_path: Path, api: CloudflareAPI) -> None:
    production_block = (
        "[env.production]\n\n"
        "[[env.production.d1_databases]]\n"
        'binding = "DB"\n'
        'database_name = "app-production"\n'
        f'database_id = "{PLACEHOLDER_ID}"  # placeholder until `d1ops create production --write-config`\n'
        "\n"
        "# a second binding in the same environment keeps its own id\n"
        "[[env.production.d1_databases]]\n"
        'binding = "CACHE"\n'
        'database_name = "app-cache"\n'
        f'database_id = "{PLACEHOLDER_ID}"\n'
    )
    toml = remote_wrangler_toml(PLACEHOLDER_ID) + "\n" + production_block
    envs = STAGING_ONLY + "  - name: production\n    target: remote\n    wrangler_env: production\n"
    proj = make_project(tmp_path / "project", wrangler=toml, environments=envs)
    server = api.server
    others = {server.create_database(f"another-teams-db-{i:02d}") for i in range(11)}  # wrangler pages by 10

    created = proj.run("create", "staging")
    assert created.exit_code == 0, output_of(created)
    (staging_db,) = [d for d in server.databases() if d["name"] == "app-staging"]
    staging_id = staging_db["uuid"]
    assert server.requests[-1]["json"] == {"name": "app-staging"}
    assert f"Created D1 database app-staging ({staging_id})." in created.stdout
    assert (
        'Put it in wrangler.toml: [[env.staging.d1_databases]] binding = "DB", database_name = "app-staging", '
        f'database_id = "{staging_id}"'
    ) in created.stdout
    assert (proj.root / "wrangler.toml").read_text() == toml  # told, not written

    written = proj.run("create", "production", "--write-config", "--json")
    assert written.exit_code == 0, output_of(written)
    result = json.loads(written.stdout)
    production_id = result["uuid"]
    assert result["config_written"] is True and result["name"] == "app-production"
    assert production_id in {d["uuid"] for d in server.databases() if d["name"] == "app-production"}
    expected = toml.replace(
        f'database_id = "{PLACEHOLDER_ID}"  # placeholder until `d1ops create production --write-config`\n',
        f'database_id = "{production_id}"\n',
    )
    assert (proj.root / "wrangler.toml").read_text() == expected  # one line changed, comments and CACHE kept
    config = load_config(proj.config)
    assert config.env("production").binding.database_id == production_id
    assert config.env("staging").binding.database_id == PLACEHOLDER_ID

    info = proj.run("info", "production", "--json")
    assert info.exit_code == 0, output_of(info)
    data = json.loads(info.stdout)
    assert (data["uuid"], data["name"], data["num_tables"]) == (production_id, "app-production", 0)
    assert any(r["path"].endswith(f"/d1/database/{production_id}") for r in server.requests)

    listed = proj.run("list", "--json")
    assert listed.exit_code == 0, output_of(listed)
    used_by = {row["name"]: row["used_by"] for row in json.loads(listed.stdout)}
    # staging's database exists but its id is not in wrangler.toml yet: no environment uses it
    assert used_by == {
        **{f"another-teams-db-{i:02d}": [] for i in range(11)},
        "app-staging": [],
        "app-production": ["production"],
    }
    assert {row["uuid"] for row in json.loads(listed.stdout)} == {*others, staging_id, production_id}
    listings = [r for r in server.requests if r["method"] == "GET" and r["path"].endswith("/d1/database")]
    assert [r["query"].get("page") for r in listings] == ["1", "2"]


# -- migrate, status, backup ----------------------------------------------------------------------------------------
def test_migrate_staging_applies_the_mvp_through_the_import_flow(
    tmp_path: Path, api: CloudflareAPI, wrangler_spy: Any
) -> None:
    proj, uuid = staging_project(tmp_path, api, DEV_THEN_STAGING)
    refused = proj.run("migrate", "staging", "--dry-run")
    assert refused.exit_code == 1
    assert "Promotion order is dev → staging: refusing to migrate staging." in refused.stderr

    assert proj.run("migrate", "dev").exit_code == 0
    before = len(api.server.requests)
    calls_before = wrangler_spy.call_count
    migrated = proj.run("migrate", "staging", "--json")
    assert migrated.exit_code == 0, output_of(migrated)
    report = json.loads(migrated.stdout)
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [(n, "applied") for n in MVP_MIGRATIONS]
    assert report["target"] == "remote" and report["bookmark"] in api.server.bookmarks(uuid)

    # the migrations went up as files through the import flow (init, upload, ingest, poll), not through /query
    applies = [c for c in argv_of(wrangler_spy)[calls_before:] if "--file" in c]
    assert applies and all("--remote" in c and c[c.index("--env") + 1] == "staging" for c in applies)
    imports = [c for c in api_calls(api, before) if c[1].startswith("import") or c[1] == "upload"]
    one_file = [("POST", "import:init"), ("PUT", "upload"), ("POST", "import:ingest"), ("POST", "import:poll")]
    assert imports == one_file * len(applies)
    queries = [r["json"]["sql"] for r in api.server.requests[before:] if r["path"].endswith("/query")]
    assert not any("CREATE TABLE users" in sql or "INSERT INTO users" in sql for sql in queries)

    assert MVP_TABLES <= tables_on_server(api, uuid)
    assert api.server.execute(uuid, "SELECT count(*) AS n FROM users")[0]["results"] == [{"n": 4}]
    recorded = api.server.execute(uuid, "SELECT name, checksum FROM d1ops_migrations ORDER BY name")[0]["results"]
    files = {n: hashlib.sha256((proj.migrations / n).read_bytes()).hexdigest() for n in MVP_MIGRATIONS}
    assert {r["name"]: r["checksum"] for r in recorded} == files
    assert api.server.execute(uuid, "SELECT count(*) AS n FROM d1ops_lock")[0]["results"] == [{"n": 0}]

    status = proj.run("status", "staging", "--json")
    assert status.exit_code == 0, output_of(status)
    data = json.loads(status.stdout)
    cells = {m["name"]: m["envs"]["staging"] for m in data["migrations"]}
    assert {n: (c["status"], c["checksum"]) for n, c in cells.items()} == {n: ("applied", files[n]) for n in files}
    assert data["summary"]["staging"]["pending"] == 0 and data["locks"] == {"staging": None}

    backed_up = proj.run("backup", "users", "--env", "staging", "--json")
    assert backed_up.exit_code == 0, output_of(backed_up)
    summary = json.loads(backed_up.stdout)
    assert summary["verified"] is True and summary["tables"] == {"users": 4}
    manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
    assert (manifest["env"], manifest["target"], manifest["verified"]) == ("staging", "remote", True)
    assert "ada@example.com" in (Path(summary["path"]) / "dump.sql").read_text()
    exports = [r["json"] for r in api.server.requests if r["path"].endswith("/export")]
    assert exports[-2]["dump_options"]["tables"] == ["users"]


# -- Time Travel ----------------------------------------------------------------------------------------------------
def test_migrate_records_a_bookmark_and_restore_goes_back_to_it(tmp_path: Path, api: CloudflareAPI) -> None:
    proj, uuid = staging_project(tmp_path, api, STAGING_ONLY_NO_BACKUP)
    assert proj.run("migrate", "staging").exit_code == 0
    proj.write(
        "migrations/0003_tags.sql",
        """\
        CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        INSERT INTO tags (name) VALUES ('d1'), ('ops');
        UPDATE users SET name = 'Countess of Lovelace' WHERE id = 1;
        """,
    )
    migrated = proj.run("migrate", "staging", "--json")
    assert migrated.exit_code == 0, output_of(migrated)
    report = json.loads(migrated.stdout)
    bookmark = report["bookmark"]
    assert bookmark in api.server.bookmarks(uuid)[:-1]  # a point before the change
    assert report["restore_command"].startswith(f"d1ops restore --bookmark {bookmark} --env staging")
    filed = json.loads(Path(report["report_path"]).read_text())
    assert (filed["bookmark"], filed["restore_command"]) == (bookmark, report["restore_command"])
    assert "tags" in tables_on_server(api, uuid)

    restored = proj.run("restore", "--bookmark", bookmark, "--env", "staging", "--yes")
    assert restored.exit_code == 0, output_of(restored)
    restores = [r for r in api.server.requests if r["path"].endswith("/time_travel/restore")]
    assert [r["query"] for r in restores] == [{"bookmark": bookmark}]
    assert "tags" not in tables_on_server(api, uuid)
    assert api.server.execute(uuid, "SELECT name FROM users WHERE id = 1")[0]["results"] == [{"name": "Ada Lovelace"}]
    assert MVP_TABLES <= tables_on_server(api, uuid)

    status = json.loads(proj.run("status", "staging", "--json").stdout)
    cells = {m["name"]: m["envs"]["staging"]["status"] for m in status["migrations"]}
    assert cells == {**dict.fromkeys(MVP_MIGRATIONS, "applied"), "0003_tags.sql": "pending"}
    # the environment is usable again: no lock of the run whose change was undone came back with the bookmark
    assert status["locks"] == {"staging": None}


# -- secrets --------------------------------------------------------------------------------------------------------
def test_api_token_never_appears_in_output_reports_or_manifests(tmp_path: Path, api: CloudflareAPI) -> None:
    proj, _ = staging_project(tmp_path, api)
    token = api.token
    # a migration whose error message carries the token: the only way to make wrangler print it
    (proj.migrations / MVP_MIGRATIONS[1]).unlink()
    proj.write("migrations/0002_bad.sql", f'INSERT INTO "{token}" (id) VALUES (1);\n')

    results = {
        "info": proj.run("info", "staging"),
        "migrate": proj.run("migrate", "staging", "--one-by-one", "--json"),
        "execute": proj.run("execute", "staging", "--command", f"SELECT * FROM \"{token}\" WHERE x = '{token}'"),
        "backup": proj.run("backup", "users", "--env", "staging", "--json"),
    }
    assert results["info"].exit_code == 0, output_of(results["info"])
    assert results["migrate"].exit_code == 1 and results["execute"].exit_code == 1
    assert json.loads(results["backup"].stdout)["verified"] is True
    report = json.loads(results["migrate"].stdout)
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [
        ("0001_initial_schema.sql", "applied"),
        ("0002_bad.sql", "failed"),
    ]
    assert "no such table: [REDACTED]" in report["error"]  # the token was there, and was taken out
    assert "no such table: [REDACTED]" in results["execute"].stderr

    for name, result in results.items():
        assert token not in output_of(result), name
    files = [p for p in (proj.root / "backups").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.parent.name == "reports" for p in files)
    for path in files:
        assert token not in path.read_text(encoding="utf-8", errors="replace"), path


# -- failures of the API --------------------------------------------------------------------------------------------
def test_wrong_token_is_an_authentication_error_and_nothing_else_is_tried(
    tmp_path: Path, api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj, uuid = staging_project(tmp_path, api)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong-token-0123456789abcdef")

    result = proj.run("migrate", "staging")
    assert result.exit_code == 1
    assert "Authentication error [code: 10000]" in result.stderr
    assert "refused the API token. Check CLOUDFLARE_API_TOKEN" in result.stderr
    assert "wrong-token-0123456789abcdef" not in output_of(result)
    assert "unlock" not in output_of(result)  # the refused lock call took no lock: nothing to release by hand
    # one query (the lock) was refused; nothing after it: no bookmark, export, import, not even a lock release
    assert api_calls(api) == [("POST", "query")]
    assert tables_on_server(api, uuid) == set()
    (report,) = (proj.root / "backups" / "staging" / "reports").glob("*.json")
    assert json.loads(report.read_text())["exit_code"] == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_api_down_is_a_connection_error_naming_the_base_url(
    tmp_path: Path, api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch, wrangler_spy: Any
) -> None:
    proj, _ = staging_project(tmp_path, api)
    base_url = f"http://127.0.0.1:{closed_port()}/client/v4"
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", base_url)
    monkeypatch.setenv("D1OPS_WRANGLER_TIMEOUT", "60")

    started = time.monotonic()
    result = proj.run("migrate", "staging")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert f"Could not reach the Cloudflare API at {base_url} (fetch failed)." in result.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s"  # measured: ~1 s (wrangler does not retry a refused connection)
    assert api.server.requests == []
    # the failed lock call only: it was refused as a whole, so no lock was taken and none is released
    assert wrangler_spy.call_count == 1
    report = json.loads(next((proj.root / "backups" / "staging" / "reports").glob("*.json")).read_text())
    assert "d1ops unlock" not in report["error"]


def test_api_that_never_answers_is_stopped_at_the_timeout_naming_the_base_url(
    tmp_path: Path, api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj, _ = staging_project(tmp_path, api, STAGING_ONLY_NO_BACKUP)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}/client/v4"
        monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", base_url)
        monkeypatch.setenv("D1OPS_WRANGLER_TIMEOUT", "3")
        started = time.monotonic()
        result = proj.run("status", "staging")
        elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert "wrangler did not finish within 3 s and was stopped." in result.stderr
    assert f"No answer from the Cloudflare API at {base_url}" in result.stderr
    assert 3 <= elapsed < 10, f"took {elapsed:.1f} s"


# -- configuration refused before wrangler starts -------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "staging"],
        ["status", "staging"],
        ["info", "staging"],
        ["backup", "--env", "staging"],
        ["restore", "--bookmark", "00000085-0000024c-00004c6d-0", "--env", "staging"],
        ["create", "staging"],
    ],
)
def test_environment_without_its_binding_is_refused_before_wrangler_starts(
    tmp_path: Path, api: CloudflareAPI, mocker: MockerFixture, command: list[str]
) -> None:
    # remotely wrangler would look the unknown binding up as a database NAME: here one called "DB" exists
    api.server.create_database("DB")
    toml = remote_wrangler_toml("unused", staging_block="# d1_databases is not inherited: this section has none\n")
    proj = make_project(tmp_path / "project", wrangler=toml, environments=DEV_THEN_STAGING)

    run = mocker.patch.object(Wrangler, "run", side_effect=AssertionError("wrangler was started"))
    result = proj.run(*command)
    run.assert_not_called()
    assert result.exit_code == 2, output_of(result)
    assert (
        "environments.yaml: environment 'staging': database 'DB' has no d1_databases entry in [env.staging] of "
        "wrangler.toml." in result.stderr
    )
    assert 'Add a [[env.staging.d1_databases]] entry with binding = "DB".' in result.stderr
    assert api.server.requests == []
