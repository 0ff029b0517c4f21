"""A live app writing through the Cloudflare API (the loopback one) while d1ops backs up and migrates the remote
environment: neither fails, and the backup holds every row written before its export started."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

from tests.cloudflare.fixture import CloudflareAPI
from tests.test_live_backup import dump_ticks
from tests.test_remote import api, output_of, staging_project  # noqa: F401 - `api` is a fixture


class ApiWriter:
    """The app: inserts ticks(n) = 1, 2, … through POST …/query every ~100 ms (127.0.0.1 only, bounded)."""

    def __init__(self, cloudflare: CloudflareAPI, uuid: str, limit: int = 600) -> None:
        self.url = f"{cloudflare.base_url}/accounts/{cloudflare.account_id}/d1/database/{uuid}/query"
        self.token, self.limit = cloudflare.token, limit
        self.done: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        for n in range(1, self.limit + 1):
            if self.stop.wait(0.1):
                return
            body = json.dumps({"sql": f"INSERT INTO ticks (n) VALUES ({n})"}).encode()
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    if json.load(answer).get("success"):
                        self.done.append(n)
            except OSError:
                continue

    def wait_for(self, count: int) -> None:
        while len(self.done) < count and self.thread.is_alive():
            self.stop.wait(0.05)


def test_remote_backup_and_migrate_verify_while_the_app_writes_through_the_api(
    tmp_path: Path,
    api: CloudflareAPI,  # noqa: F811
) -> None:
    proj, uuid = staging_project(tmp_path, api)  # remote: backup required
    api.server.execute(uuid, "CREATE TABLE ticks (n INTEGER PRIMARY KEY)")
    proj.write("migrations/0001_initial_schema.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    for extra in proj.migrations.glob("0002_*.sql"):
        extra.unlink()
    writer = ApiWriter(api, uuid)
    writer.thread.start()
    try:
        writer.wait_for(5)  # the app is live before the commands start
        before = list(writer.done)
        backup = proj.run("backup", "--env", "staging", "--json")
        before_migrate = list(writer.done)
        migrated = proj.run("migrate", "staging", "--json")
        writer.wait_for(len(writer.done) + 3)  # and still writing after them
    finally:
        writer.stop.set()
        writer.thread.join(timeout=30)

    assert backup.exit_code == 0, output_of(backup)
    summary = json.loads(backup.stdout)
    assert summary["verified"] is True
    in_dump = dump_ticks(Path(summary["path"]), tmp_path)
    assert set(before) <= set(in_dump) and summary["tables"]["ticks"] == len(in_dump)

    assert migrated.exit_code == 0, output_of(migrated)
    report = json.loads(migrated.stdout)
    assert [m["result"] for m in report["migrations"]] == ["applied"]
    assert report["backup"]["verified"] is True
    (tmp_path / "safety").mkdir()
    in_safety = dump_ticks(Path(report["backup"]["path"]), tmp_path / "safety")
    assert set(before_migrate) <= set(in_safety)
    rows = api.server.execute(uuid, "SELECT count(*) AS n FROM ticks")[0]["results"][0]["n"]
    assert rows == len(writer.done) and len(writer.done) > len(before_migrate)
