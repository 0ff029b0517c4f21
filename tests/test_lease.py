"""The lock is a lease: it expires, an expired one is taken over (tests/test_kill.py), a live one refuses,
and a run releases only its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from d1ops.errors import ConfigError
from d1ops.run import sequence as pipeline
from d1ops.run.lease import lease_minutes
from d1ops.wrangler.runner import Wrangler
from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import Proj
from tests.test_restore import REMOTE_ENVIRONMENTS, REMOTE_WRANGLER

OLD_LOCK = (
    "DROP TABLE d1ops_lock; CREATE TABLE d1ops_lock (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, "
    "acquired_at TEXT NOT NULL); INSERT INTO d1ops_lock VALUES (1, 'old d1ops run 42', '2026-01-01T00:00:00Z')"
)


def test_lease_minutes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("D1OPS_LEASE_MINUTES", raising=False)
    assert lease_minutes() == 120
    monkeypatch.setenv("D1OPS_LEASE_MINUTES", "2.5")
    assert lease_minutes() == 2.5
    monkeypatch.setenv("D1OPS_LEASE_MINUTES", "soon")
    with pytest.raises(ConfigError, match="D1OPS_LEASE_MINUTES='soon' is not a number of minutes"):
        lease_minutes()


def test_a_lock_table_from_before_leases_gets_its_column_in_the_lock_call(proj: Proj) -> None:
    proj.sql(OLD_LOCK)

    refused = proj.run("migrate", "dev", "--json")

    assert refused.exit_code == 1
    report = json.loads(refused.stdout)
    assert report["wrangler_processes"] == 2  # the lock call, refused by the old table, then again with the upgrade
    assert "locked by old d1ops run 42 since 2026-01-01T00:00:00Z" in report["error"]
    assert "taken before leases existed, it does not expire" in report["error"]
    columns = [r[1] for r in proj.query("PRAGMA table_info(d1ops_lock)")]
    assert columns == ["id", "owner", "acquired_at", "expires_at"]
    assert proj.query("SELECT owner, expires_at FROM d1ops_lock") == [("old d1ops run 42", None)]
    assert proj.run("unlock", "dev").exit_code == 0
    assert proj.run("migrate", "dev").exit_code == 0


def test_time_travel_restore_releases_the_stale_lease_but_not_a_newer_run_s(
    tmp_path: Path, cloudflare_api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloudflare_api.env.items():
        monkeypatch.setenv(name, value)
    server = cloudflare_api.server
    uuid = server.create_database("app-db")
    proj = Proj(tmp_path / "remote")
    proj.write("wrangler.toml", REMOTE_WRANGLER.format(uuid=uuid))
    proj.write("environments.yaml", REMOTE_ENVIRONMENTS)
    server.execute(  # the bookmark is taken while a run held its lease (as the run records bookmarks)
        uuid,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY); CREATE TABLE d1ops_lock (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "owner TEXT NOT NULL, acquired_at TEXT NOT NULL, expires_at TEXT); "
        "INSERT INTO d1ops_lock VALUES (1, 'the run of back then', '2025-01-01T00:00:00.000Z', '2025-01-01T02:00:00Z')",
    )
    bookmark = server.bookmarks(uuid)[-1]
    server.execute(uuid, "DELETE FROM d1ops_lock")
    real = Wrangler.time_travel_restore

    def restore_then_a_new_run_locks(self: Wrangler, env: Any, **kwargs: Any) -> Any:
        answer = real(self, env, **kwargs)
        # between the restore and our release, a run that started after the restore takes the lease (the stale
        # one would have refused it: here it took it over)
        server.execute(
            uuid,
            "DELETE FROM d1ops_lock; INSERT INTO d1ops_lock VALUES (1, 'a newer run', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 seconds'), '2999-01-01T00:00:00Z')",
        )
        return answer

    monkeypatch.setattr(Wrangler, "time_travel_restore", restore_then_a_new_run_locks)
    result = proj.run("restore", "--bookmark", bookmark, "--env", "production", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert server.execute(uuid, "SELECT owner FROM d1ops_lock")[0]["results"] == [{"owner": "a newer run"}]


def test_time_travel_restore_releases_the_lease_that_came_back_from_the_past(
    tmp_path: Path, cloudflare_api: CloudflareAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloudflare_api.env.items():
        monkeypatch.setenv(name, value)
    server = cloudflare_api.server
    uuid = server.create_database("app-db")
    proj = Proj(tmp_path / "remote")
    proj.write("wrangler.toml", REMOTE_WRANGLER.format(uuid=uuid))
    proj.write("environments.yaml", REMOTE_ENVIRONMENTS)
    server.execute(
        uuid,
        "CREATE TABLE d1ops_lock (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, acquired_at TEXT NOT "
        "NULL, expires_at TEXT); INSERT INTO d1ops_lock VALUES (1, 'the run of back then', "
        "'2025-01-01T00:00:00.000Z', '2999-01-01T00:00:00Z')",
    )
    bookmark = server.bookmarks(uuid)[-1]
    server.execute(uuid, "DELETE FROM d1ops_lock")

    result = proj.run("restore", "--bookmark", bookmark, "--env", "production", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert server.execute(uuid, "SELECT * FROM d1ops_lock")[0]["results"] == []


def test_a_run_whose_lease_was_taken_over_applies_nothing(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    real = pipeline.take_safety

    def safety_then_the_lease_is_taken_over(run: pipeline.Run, change: pipeline.Change) -> None:
        real(run, change)
        proj.sql(  # our lease expired meanwhile, and another run took it over
            "DELETE FROM d1ops_lock; INSERT INTO d1ops_lock VALUES "
            "(1, 'the next run', '2026-01-01T00:00:00Z', '2999-01-01T00:00:00Z')",
        )

    monkeypatch.setattr(pipeline, "take_safety", safety_then_the_lease_is_taken_over)
    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert "This run no longer held the lease on dev" in report["error"]
    assert "nothing of it was applied" in report["error"]
    assert "tags" not in proj.tables()
    assert proj.query("SELECT owner FROM d1ops_lock") == [("the next run",)]  # not ours to release
