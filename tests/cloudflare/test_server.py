"""Drive the REAL wrangler binary against the fake D1 API (plus a few direct HTTP checks of the fake)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cloudflare.fixture import CloudflareAPI, cloudflare_api  # noqa: F401
from tests.cloudflare.server import split_sql
from tests.conftest import WRANGLER  # counted (conftest.py)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
needs_wrangler = pytest.mark.skipif(not WRANGLER.exists(), reason="wrangler is not installed (npm ci)")


def wrangler(api: CloudflareAPI, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(WRANGLER), *args],
        cwd=cwd,
        env={**os.environ, **api.env, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    proc.stdout, proc.stderr = ANSI.sub("", proc.stdout), ANSI.sub("", proc.stderr)
    return proc


def json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    """wrangler's --json output; `execute --file` prints spinner lines to stdout before the JSON."""
    match = re.search(r"^[\[{]", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    return json.loads(proc.stdout[match.start() :])


def write_project(path: Path, name: str, database_id: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "wrangler.toml").write_text(
        'name = "fake-d1-test"\ncompatibility_date = "2024-09-01"\n\n'
        f'[[d1_databases]]\nbinding = "DB"\ndatabase_name = "{name}"\ndatabase_id = "{database_id}"\n'
    )
    return path


@pytest.fixture
def project(tmp_path: Path, cloudflare_api: CloudflareAPI) -> tuple[Path, str]:  # noqa: F811
    uuid = cloudflare_api.server.create_database("app-db")
    return write_project(tmp_path / "project", "app-db", uuid), uuid


def rows(api: CloudflareAPI, uuid: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(api.server.database_path(uuid))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def actions(api: CloudflareAPI, suffix: str) -> list[Any]:
    return [
        (r["method"], (r["json"] or {}).get("action"))
        for r in api.server.requests
        if r["path"].endswith(suffix) or r["path"].startswith("/upload/")
    ]


SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), body TEXT);
"""


# ------------------------------------------------------------------------------------ real wrangler


@needs_wrangler
def test_create_list_and_duplicate(tmp_path: Path, cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    created = wrangler(cloudflare_api, tmp_path, "d1", "create", "fresh-db")
    assert created.returncode == 0, created.stderr
    assert "Successfully created DB 'fresh-db'" in created.stdout
    (db,) = cloudflare_api.server.databases()
    assert db["name"] == "fresh-db" and db["uuid"] in created.stdout
    assert cloudflare_api.server.requests[0]["json"] == {"name": "fresh-db"}
    assert "authorization" not in {k.lower() for k in cloudflare_api.server.requests[0]["headers"]}

    listed = wrangler(cloudflare_api, tmp_path, "d1", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json_out(listed)] == ["fresh-db"]
    assert cloudflare_api.server.requests[-1]["query"] == {"per_page": "10", "page": "1"}

    again = wrangler(cloudflare_api, tmp_path, "d1", "create", "fresh-db")
    assert again.returncode == 1
    assert "A database with that name already exists" in again.stderr


@needs_wrangler
def test_info(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    cloudflare_api.server.execute(uuid, SCHEMA)
    proc = wrangler(cloudflare_api, cwd, "d1", "info", "DB", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json_out(proc)
    assert info["uuid"] == uuid and info["name"] == "app-db"
    assert info["num_tables"] == 2 and info["database_size"] > 0 and info["read_queries_24h"] == 0
    assert any(r["path"] == "/client/v4/graphql" for r in cloudflare_api.server.requests)


@needs_wrangler
def test_execute_command_json(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    sql = SCHEMA + "INSERT INTO users (email) VALUES ('a@x.io'), ('b@x.io'); SELECT id, email FROM users;"
    proc = wrangler(cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--json", "--command", sql)
    assert proc.returncode == 0, proc.stderr
    results = json_out(proc)
    assert len(results) == 4 and all(r["success"] for r in results)
    assert results[2]["meta"]["changes"] == 2 and results[2]["meta"]["last_row_id"] == 2
    assert results[3]["results"] == [{"id": 1, "email": "a@x.io"}, {"id": 2, "email": "b@x.io"}]
    assert cloudflare_api.server.requests[-1]["json"] == {"sql": sql}
    assert len(cloudflare_api.server.bookmarks(uuid)) == 2  # creation + this write


@needs_wrangler
def test_bad_sql_fails_and_rolls_back(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    cloudflare_api.server.execute(uuid, SCHEMA)
    sql = "INSERT INTO users (email) VALUES ('a@x.io'); SELECT * FROM nope;"
    proc = wrangler(cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--json", "--command", sql)
    assert proc.returncode == 1
    error = json_out(proc)["error"]
    assert error["code"] == 7500
    assert error["notes"][0]["text"] == "no such table: nope: SQLITE_ERROR [code: 7500]"
    assert rows(cloudflare_api, uuid, "SELECT * FROM users") == []  # the whole request was rolled back


@needs_wrangler
def test_execute_file_import(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    (cwd / "seed.sql").write_text(
        SCHEMA + "-- a comment; with a semicolon\n"
        "INSERT INTO users (email) VALUES ('a@x.io');\n"
        "/* block; comment */ INSERT INTO posts VALUES (1, 1, 'it''s; fine\nsecond line');\n"
        "CREATE TRIGGER stamp AFTER INSERT ON posts BEGIN\n"
        "  UPDATE posts SET body = 'x;y' WHERE id = NEW.id AND body IS NULL;\nEND;\n"
        "INSERT INTO posts VALUES (2, 1, NULL)"
    )
    proc = wrangler(cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--json", "--file", "seed.sql")
    assert proc.returncode == 0, proc.stderr
    (result,) = json_out(proc)
    assert result["results"][0]["Total queries executed"] == 6
    assert result["finalBookmark"] == cloudflare_api.server.bookmarks(uuid)[-1]
    assert rows(cloudflare_api, uuid, "SELECT id, body FROM posts ORDER BY id") == [
        (1, "it's; fine\nsecond line"),
        (2, "x;y"),
    ]
    assert actions(cloudflare_api, "/import") == [
        ("POST", "init"),
        ("PUT", None),
        ("POST", "ingest"),
        ("POST", "poll"),
    ]

    # A failing import (foreign key violation in the last statement) leaves the database untouched.
    before = cloudflare_api.server.bookmarks(uuid)
    (cwd / "bad.sql").write_text("INSERT INTO users (email) VALUES ('b@x.io');\nINSERT INTO posts VALUES (3, 42, 'z');")
    proc = wrangler(cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--json", "--file", "bad.sql")
    assert proc.returncode == 1
    assert json_out(proc)["error"]["text"] == "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
    assert rows(cloudflare_api, uuid, "SELECT email FROM users") == [("a@x.io",)]
    assert cloudflare_api.server.bookmarks(uuid) == before


@needs_wrangler
def test_export(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    cloudflare_api.server.execute(
        uuid,
        SCHEMA + "CREATE INDEX posts_user ON posts (user_id);"
        "INSERT INTO users (email) VALUES ('a@x.io'), ('o''neil@x.io');"
        "INSERT INTO posts VALUES (1, 1, 'line1\nline2'), (2, 2, NULL);",
    )
    proc = wrangler(cloudflare_api, cwd, "d1", "export", "DB", "--remote", "--output", "all.sql", "-y")
    assert proc.returncode == 0, proc.stderr
    dump = (cwd / "all.sql").read_text()
    assert dump.splitlines() == [
        "PRAGMA defer_foreign_keys=TRUE;",
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE);",
        "INSERT INTO \"users\" VALUES(1,'a@x.io');",
        "INSERT INTO \"users\" VALUES(2,'o''neil@x.io');",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), body TEXT);",
        "INSERT INTO \"posts\" VALUES(1,1,replace('line1\\nline2','\\n',char(10)));",
        'INSERT INTO "posts" VALUES(2,2,NULL);',
        "DELETE FROM sqlite_sequence;",
        "INSERT INTO \"sqlite_sequence\" VALUES('users',2);",
        "CREATE INDEX posts_user ON posts (user_id);",
    ]
    copy = sqlite3.connect(":memory:")  # the dump restores to the same data
    copy.executescript(dump)
    assert copy.execute("SELECT body FROM posts WHERE id = 1").fetchone() == ("line1\nline2",)

    proc = wrangler(
        cloudflare_api, cwd, "d1", "export", "DB", "--remote", "--output", "posts.sql", "-y",
        "--table", "posts", "--no-schema",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "posts.sql").read_text().splitlines() == [
        "PRAGMA defer_foreign_keys=TRUE;",
        "INSERT INTO \"posts\" VALUES(1,1,replace('line1\\nline2','\\n',char(10)));",
        'INSERT INTO "posts" VALUES(2,2,NULL);',
    ]
    export_bodies = [r["json"] for r in cloudflare_api.server.requests if r["path"].endswith("/export")]
    assert export_bodies[-2] == {
        "output_format": "polling",
        "dump_options": {"no_schema": True, "no_data": False, "tables": ["posts"]},
    }
    assert export_bodies[-1]["current_bookmark"] == cloudflare_api.server.bookmarks(uuid)[-1]


@needs_wrangler
def test_time_travel_info_and_restore(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, uuid = project
    server = cloudflare_api.server
    server.execute(uuid, SCHEMA + "INSERT INTO users (email) VALUES ('a@x.io');")
    good = server.bookmarks(uuid)[-1]
    server.execute(uuid, "DELETE FROM users;")
    oops = server.bookmarks(uuid)[-1]

    info = wrangler(cloudflare_api, cwd, "d1", "time-travel", "info", "DB", "--json")
    assert info.returncode == 0, info.stderr
    assert json_out(info) == {"bookmark": oops}

    restore = wrangler(cloudflare_api, cwd, "d1", "time-travel", "restore", "DB", "--bookmark", good, "--json")
    assert restore.returncode == 0, restore.stderr
    result = json_out(restore)
    assert result["bookmark"] == good and result["previous_bookmark"] == oops
    assert rows(cloudflare_api, uuid, "SELECT email FROM users") == [("a@x.io",)]
    assert server.bookmarks(uuid)[-1] not in (good, oops)  # a restore is itself a new point in time


@needs_wrangler
def test_wrong_token(project: tuple[Path, str], cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd, _ = project
    proc = wrangler(
        cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--command", "SELECT 1",
        CLOUDFLARE_API_TOKEN="not-the-token",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Authentication error [code: 10000]" in proc.stderr
    assert "/query" not in "".join(r["path"] for r in cloudflare_api.server.requests[1:])  # no retry


@needs_wrangler
def test_missing_database(tmp_path: Path, cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    cwd = write_project(tmp_path / "project", "ghost", "00000000-0000-4000-8000-000000000000")
    proc = wrangler(cloudflare_api, cwd, "d1", "execute", "DB", "--remote", "--json", "--command", "SELECT 1")
    assert proc.returncode == 1
    error = json_out(proc)["error"]
    assert error["code"] == 7404
    assert "The database 00000000-0000-4000-8000-000000000000 could not be found" in error["notes"][0]["text"]


# ------------------------------------------------------------------------------------ the fake, directly


def call(api: CloudflareAPI, method: str, path: str, body: Any = None, token: str | None = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or api.token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api.base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_auth_and_routing(cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    api, dbs = cloudflare_api, f"/accounts/{cloudflare_api.account_id}/d1/database"
    auth_error = [{"code": 10000, "message": "Authentication error"}]
    assert call(api, "GET", dbs, token=None) == (
        401,
        {**envelope(None), "success": False, "errors": auth_error},
    )
    assert call(api, "GET", dbs, token="wrong")[0] == 403
    assert call(api, "GET", "/accounts/0000/d1/database")[1]["errors"] == auth_error
    status, body = call(api, "GET", "/zones")
    assert status == 404 and body["success"] is False and body["errors"][0]["code"] == 7003
    status, body = call(api, "GET", dbs + "/nope")
    assert (status, body["errors"][0]["code"]) == (404, 7404)


def envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def test_api_databases_queries_and_bookmarks(cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    api, dbs = cloudflare_api, f"/accounts/{cloudflare_api.account_id}/d1/database"
    uuids = [call(api, "POST", dbs, {"name": f"db{i}"})[1]["result"]["uuid"] for i in range(3)]
    assert call(api, "POST", dbs, {"name": "db0"})[1]["errors"][0]["code"] == 7502
    status, page = call(api, "GET", dbs + "?per_page=2&page=2")
    assert status == 200 and [d["name"] for d in page["result"]] == ["db2"]
    assert page["result_info"] == {"page": 2, "per_page": 2, "count": 1, "total_count": 3}
    assert [d["uuid"] for d in call(api, "GET", dbs + "?name=db1")[1]["result"]] == [uuids[1]]

    query = f"{dbs}/{uuids[0]}/query"
    assert call(api, "POST", query, {"sql": "CREATE TABLE t (v)"})[0] == 200
    t_created = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    result = call(api, "POST", query, {"sql": "INSERT INTO t VALUES (?)", "params": ["x"]})[1]["result"]
    assert result[0]["meta"]["changes"] == 1 and result[0]["meta"]["changed_db"] is True
    raw = call(api, "POST", f"{dbs}/{uuids[0]}/raw", {"sql": "SELECT v, 1 AS one FROM t WHERE 0"})
    assert raw[1]["result"][0]["results"] == {"columns": ["v", "one"], "rows": []}

    for sql, message in [
        ("BEGIN TRANSACTION; INSERT INTO t VALUES (1); COMMIT;", "To execute a transaction"),
        ("SELECT * FROM _cf_KV", "access to _cf_KV.key is prohibited: SQLITE_AUTH"),
        ("-- nothing here", "No SQL statements detected."),
    ]:
        status, body = call(api, "POST", query, {"sql": sql})
        assert status == 400 and body["errors"][0]["code"] == 7500 and message in body["errors"][0]["message"]

    bookmarks = api.server.bookmarks(uuids[0])
    assert len(bookmarks) == 3 and bookmarks == sorted(bookmarks)
    tt = f"{dbs}/{uuids[0]}/time_travel"
    assert call(api, "GET", f"{tt}/bookmark")[1]["result"] == {"bookmark": bookmarks[-1]}
    assert call(api, "GET", f"{tt}/bookmark?timestamp={t_created.replace('+', '%2B')}")[1]["result"] == {
        "bookmark": bookmarks[1]
    }
    status, body = call(api, "POST", f"{tt}/restore?timestamp={t_created.replace('+', '%2B')}")
    assert body["result"]["bookmark"] == bookmarks[1] and body["result"]["previous_bookmark"] == bookmarks[2]
    assert api.server.execute(uuids[0], "SELECT count(*) AS n FROM t")[0]["results"] == [{"n": 0}]

    assert call(api, "DELETE", f"{dbs}/{uuids[2]}") == (200, envelope(None))
    assert [d["name"] for d in api.server.databases()] == ["db0", "db1"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1; SELECT 2;  ", ["SELECT 1;", "SELECT 2;"]),
        (
            "SELECT ';' AS a; -- x; y\nSELECT \"b;\" /* ; */;",
            ["SELECT ';' AS a;", '-- x; y\nSELECT "b;" /* ; */;'],
        ),
        (
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); DELETE FROM c; END; SELECT 1",
            [
                "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); DELETE FROM c; END;",
                "SELECT 1",
            ],
        ),
        ("-- only a comment\n;\n", []),
    ],
)
def test_split_sql(sql: str, expected: list[str]) -> None:
    assert split_sql(sql) == expected


def test_api_query_batch_runs_as_one_transaction(cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    api, dbs = cloudflare_api, f"/accounts/{cloudflare_api.account_id}/d1/database"
    uuid = call(api, "POST", dbs, {"name": "batched"})[1]["result"]["uuid"]
    query = f"{dbs}/{uuid}/query"
    batch = [
        {"sql": "CREATE TABLE t (v); INSERT INTO t VALUES (1)"},
        {"sql": "INSERT INTO t VALUES (?)", "params": [2]},
    ]
    status, body = call(api, "POST", query, {"batch": [*batch, {"sql": "SELECT v FROM t ORDER BY v"}]})
    assert status == 200 and [r["results"] for r in body["result"]][-1] == [{"v": 1}, {"v": 2}]
    status, body = call(api, "POST", query, {"batch": [{"sql": "INSERT INTO t VALUES (3)"}, {"sql": "nope"}]})
    assert status == 400 and "syntax error" in body["errors"][0]["message"]
    assert api.server.execute(uuid, "SELECT count(*) AS n FROM t")[0]["results"] == [{"n": 2}]  # 3 rolled back
    assert call(api, "POST", query, {"batch": []})[0] == 400


def test_requests_on_different_databases_run_side_by_side(cloudflare_api: CloudflareAPI) -> None:  # noqa: F811
    """A slow query on one database does not hold up a query on another (a lock per database)."""
    import threading

    api, dbs = cloudflare_api, f"/accounts/{cloudflare_api.account_id}/d1/database"
    slow, fast = (call(api, "POST", dbs, {"name": n})[1]["result"]["uuid"] for n in ("slow", "fast"))
    heavy = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c"
    started = time.monotonic()
    thread = threading.Thread(target=call, args=(api, "POST", f"{dbs}/{slow}/query", {"sql": heavy}))
    thread.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert call(api, "POST", f"{dbs}/{fast}/query", {"sql": "SELECT 1 AS one"})[0] == 200
    fast_took = time.monotonic() - t0
    thread.join()
    slow_took = time.monotonic() - started
    assert fast_took < slow_took / 2, (fast_took, slow_took)
