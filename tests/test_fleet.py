"""Fleets on the loopback D1 API: real HTTP on 127.0.0.1, the emulator's lock per database, d1ops's own client.

No wrangler process runs here (a fleet talks to the API), so 200 databases stay within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import Proj, make_project

WRANGLER_TOML = 'name = "fleet-test"\ncompatibility_date = "2025-01-01"\n'
FLEET_ONLY = """\
database: DB
environments:
  - name: tenants
    target: remote
    fleet: "tenant-*"
"""
MIGRATIONS = {
    "0001_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n",
    "0002_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n"
    "ALTER TABLE notes ADD COLUMN tag_id INTEGER REFERENCES tags(id);\n",
}


def fleet_project(root: Path, environments: str = FLEET_ONLY) -> Proj:
    proj = make_project(root, wrangler=WRANGLER_TOML, environments=environments, migrations_from=None)
    for name, sql in MIGRATIONS.items():
        proj.write(f"migrations/{name}", sql)
    return proj


def make_fleet(api: CloudflareAPI, count: int) -> dict[str, str]:
    return {f"tenant-{i:03d}": api.server.create_database(f"tenant-{i:03d}") for i in range(count)}


def recorded(api: CloudflareAPI, uuid: str) -> list[tuple[str, int]]:
    tables = api.server.execute(uuid, "SELECT name FROM sqlite_master WHERE name = 'd1_migrations'")
    if not tables[0]["results"]:
        return []
    rows = api.server.execute(uuid, "SELECT name, count(*) AS n FROM d1_migrations GROUP BY name ORDER BY name")
    return [(r["name"], r["n"]) for r in rows[0]["results"]]


def test_fleet_of_200_with_one_broken_killed_and_resumed(api: CloudflareAPI, tmp_path: Path) -> None:
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 200)
    outsider = api.server.create_database("billing")
    api.server.execute(fleet["tenant-137"], "CREATE TABLE notes (legacy TEXT)")  # 0001 cannot apply here
    initial_bookmarks = {name: len(api.server.bookmarks(uuid)) for name, uuid in fleet.items()}
    argv = [sys.executable, "-m", "d1ops", "--config", str(proj.config), "migrate", "tenants", "--keep-going"]
    journal = proj.root / "backups" / "tenants" / "fleet" / "journal.jsonl"
    child = subprocess.Popen(
        [*argv, "--concurrency", "2", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **api.env},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        if journal.exists() and journal.read_text().count('"event":"done"') >= 40:
            break
        time.sleep(0.005)
    assert child.poll() is None, "the first run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    done_before = journal.read_text().count('"event":"done"')
    assert 40 <= done_before < 200

    result = proj.run("migrate", "tenants", "--keep-going", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    by_name = {d["name"]: d for d in doc["databases"]}
    assert sorted(by_name) == sorted(fleet)  # the outsider is not part of the fleet
    failed = [d for d in doc["databases"] if d["result"] == "failed"]
    assert [(d["name"], d["failed_migration"]) for d in failed] == [("tenant-137", "0001_notes.sql")]
    assert "already exists" in failed[0]["error"] and "0001_notes.sql" in doc["error"]
    assert doc["summary"]["resumed"] and doc["summary"]["failed"] == 1 and doc["summary"]["applied"] == 199
    for name, uuid in fleet.items():
        if name == "tenant-137":
            assert recorded(api, uuid) == []
            continue
        assert recorded(api, uuid) == [("0001_notes.sql", 1), ("0002_tags.sql", 1)], name
        bookmark = by_name[name]["bookmark"]
        assert bookmark and bookmark in api.server.bookmarks(uuid), name
        assert len(api.server.bookmarks(uuid)) > initial_bookmarks[name]
        lock = api.server.execute(uuid, "SELECT count(*) AS n FROM d1ops_lock")[0]["results"]
        assert lock == [{"n": 0}], name  # every lease released
    tables = api.server.execute(outsider, "SELECT name FROM sqlite_master WHERE type = 'table'")[0]["results"]
    assert [t["name"] for t in tables] == ["_cf_KV"] and len(api.server.bookmarks(outsider)) == 1
    assert not journal.exists()  # the finished run's journal is kept as history, the next run starts afresh
    assert len(list(journal.parent.glob("*-journal.jsonl"))) == 1

    status = proj.run("status", "tenants", "--json")
    summary = json.loads(status.stdout)["fleet"]
    assert (summary["databases"], summary["at_head"], summary["behind"], summary["failed"]) == (200, 199, {}, 1)
    text = proj.run("status", "tenants", "--names")
    assert text.output.startswith("tenants: 200 databases: 199 at head, 1 failed or drifted."), text.output
    assert "failed     tenant-137" in text.output and "tenant-001" not in text.output


def test_fleet_stops_new_starts_after_a_failure_and_up_to_date_costs_two_calls(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 6)
    api.server.execute(fleet["tenant-000"], "CREATE TABLE notes (legacy TEXT)")
    dry = json.loads(proj.run("migrate", "tenants", "--dry-run", "--json").stdout)
    assert [d["applied"] for d in dry["databases"]] == [["0001_notes.sql", "0002_tags.sql"]] * 6
    assert all(len(api.server.bookmarks(uuid)) == 1 for uuid in list(fleet.values())[1:])  # no lease taken
    result = proj.run("migrate", "tenants", "--concurrency", "1", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [d["result"] for d in doc["databases"]] == ["failed"] + ["skipped"] * 5
    result = proj.run("migrate", "tenants", "--except", "tenant-000", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["applied"] == 5 and doc["summary"]["api_calls_per_database"] <= 3.2  # + 1 list call
    again = json.loads(proj.run("migrate", "tenants", "--except", "tenant-000", "--json").stdout)
    assert again["summary"]["up-to-date"] == 5
    assert again["summary"]["api_calls"] == 1 + 2 * 5  # the list, then lease+read and release for each
    proj.write("migrations/0003_pins.sql", "ALTER TABLE notes ADD COLUMN pinned INTEGER;\n")
    text = proj.run("status", "tenants", "--check").output
    assert "tenants: 6 databases: 0 at head, 5 behind by 1, 1 failed or drifted." in text


def test_fleet_shards_split_deterministically(api: CloudflareAPI, tmp_path: Path) -> None:
    proj = fleet_project(tmp_path / "project")
    make_fleet(api, 30)
    names: list[str] = []
    for k in (1, 2, 3):
        doc = json.loads(proj.run("migrate", "tenants", "--shard", f"{k}/3", "--json").stdout)
        names += [d["name"] for d in doc["databases"]]
        assert doc["summary"]["shard"] == f"{k}/3"
    assert sorted(names) == [f"tenant-{i:03d}" for i in range(30)]
    assert len(list((proj.root / "backups" / "tenants" / "fleet").glob("*-journal-shard-*-of-3.jsonl"))) == 3


def test_fleet_flags_on_a_single_database_are_refused(api: CloudflareAPI, tmp_path: Path) -> None:
    del api
    proj = fleet_project(
        tmp_path / "project",
        FLEET_ONLY + "  - name: solo\n    target: remote\n    fleet_file: tenants.txt\n",
    )
    proj.write("tenants.txt", "tenant-404\n")
    result = proj.run("migrate", "solo", "--json")
    assert result.exit_code == 2 and "tenant-404" in json.loads(result.stdout)["error"]


DEV_THEN_TENANTS = """\
database: DB
environments:
  - name: dev
    target: local
    backup: skip
  - name: tenants
    target: remote
    fleet: "tenant-*"
    protected: true
"""


def test_fleet_takes_its_place_in_the_promotion_order(api: CloudflareAPI, proj: Proj) -> None:
    """dev (local, 0001 and 0002 applied) comes first: the fleet gets what dev has, a file dev lacks refuses the
    run before any database is touched; protected: no terminal and no --yes refuses (before dev is read)."""
    proj.write("environments.yaml", DEV_THEN_TENANTS)
    fleet = make_fleet(api, 3)
    refused = proj.run("migrate", "tenants", "--json")
    assert refused.exit_code == 1 and "protected" in json.loads(refused.stdout)["error"]
    assert all(recorded(api, uuid) == [] for uuid in fleet.values())
    assert all(len(api.server.bookmarks(uuid)) == 1 for uuid in fleet.values())  # nothing written, not even a lease
    proj.write("migrations/0003_more.sql", "CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    gated = proj.run("migrate", "tenants", "--yes", "--json")
    assert gated.exit_code == 1 and "0003_more.sql is not applied to dev" in json.loads(gated.stdout)["error"]
    (proj.migrations / "0003_more.sql").unlink()
    done = json.loads(proj.run("migrate", "tenants", "--yes", "--except", "tenant-002", "--json").stdout)
    assert done["summary"]["applied"] == 2
    matrix = proj.run("status", "--all")
    assert matrix.exit_code == 0, matrix.output
    lines = matrix.output.splitlines()
    assert "TENANTS" in lines[0]
    assert [ln.split()[-1] for ln in lines[2:4]] == ["2/3", "2/3"], matrix.output
    assert "tenants: 3 databases: 2 at head, 1 behind by 2, 0 failed or drifted." in matrix.output
