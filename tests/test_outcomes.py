"""Unknown outcomes: a call that may have reached the database and did not answer is read back, never retried,
and reported as what the database holds."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from d1ops.errors import OutcomeUnknown
from d1ops.wrangler.runner import Wrangler
from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import Proj
from tests.test_remote import STAGING_ONLY_NO_BACKUP, api, output_of, staging_project  # noqa: F401
from tests.wrangler_shim import interrupt_and_wait, shim_env, start_d1ops, wait_for

NEW = {
    "0003_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n",
    "0004_labels.sql": "CREATE TABLE labels (id INTEGER PRIMARY KEY);\n",
}


def add_migrations(proj: Proj) -> None:
    for name, sql in NEW.items():
        proj.write(f"migrations/{name}", sql)


def applied_names(proj: Proj) -> list[str]:
    return [r[0] for r in proj.query("SELECT name FROM d1_migrations ORDER BY id")]


@pytest.mark.parametrize("reached", [True, False], ids=["applied-then-timeout", "timeout-before-db"])
def test_a_timeout_at_the_seam_is_read_back_and_never_retried(
    proj: Proj, monkeypatch: pytest.MonkeyPatch, reached: bool
) -> None:
    add_migrations(proj)
    real = Wrangler.execute
    applies: list[Path] = []

    def execute(self: Wrangler, env: Any, **kwargs: Any) -> Any:
        file = kwargs.get("file")
        if file is None or file.name != "batch.sql":
            return real(self, env, **kwargs)
        applies.append(file)
        if reached:
            real(self, env, **kwargs)  # the batch ran to the end in the database…
        raise OutcomeUnknown(["wrangler"], None, "wrangler did not finish within 300 s and was stopped.")

    monkeypatch.setattr(Wrangler, "execute", execute)
    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    outcomes = {m["name"]: m["result"] for m in report["migrations"]}
    on_db = applied_names(proj)
    assert len(applies) == 1  # never retried
    if reached:
        assert outcomes == dict.fromkeys(NEW, "applied")
        assert "Read back from the database: applied: 0003_tags.sql, 0004_labels.sql" in result.stderr
        assert on_db[-2:] == list(NEW)
    else:
        assert outcomes == dict.fromkeys(NEW, "not applied")
        assert "Read back from the database: none of them is applied" in result.stderr
        assert not set(NEW) & set(on_db)
    assert "Nothing was retried" in report["error"]
    assert "nothing was applied" not in result.stderr.lower()
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]  # released by the batch, or by the run
    assert Path(report["report_path"]).is_file()


def test_a_remote_import_applied_then_connection_dropped_is_read_back(
    tmp_path: Path,
    api: CloudflareAPI,  # noqa: F811
) -> None:
    proj, uuid = staging_project(tmp_path, api, STAGING_ONLY_NO_BACKUP)
    api.server.faults.add("drop-after-import")

    result = proj.run("migrate", "staging", "--json")

    assert result.exit_code == 1, output_of(result)
    assert "drop-after-import" not in api.server.faults  # the fault fired: the import ran, its answer was lost
    report = json.loads(result.stdout)
    names = ["0001_initial_schema.sql", "0002_sample_data.sql"]
    assert [(m["name"], m["result"]) for m in report["migrations"]] == [(n, "applied") for n in names]
    assert f"Read back from the database: applied: {', '.join(names)}" in report["error"]
    rows = api.server.execute(uuid, "SELECT name FROM d1_migrations ORDER BY id")[0]["results"]
    assert [r["name"] for r in rows] == names  # once each
    ingests = [r for r in api.server.requests if (r["json"] or {}).get("action") == "ingest"]
    assert len(ingests) == 1  # never retried
    assert api.server.execute(uuid, "SELECT count(*) AS n FROM users")[0]["results"] == [{"n": 4}]


@pytest.mark.parametrize("when", ["after", "before"])
def test_ctrl_c_during_the_apply_reads_back_files_the_report_and_exits_130(proj: Proj, when: str) -> None:
    """SIGINT while the apply call runs (the shim holds it: after the batch reached the database, or before)."""
    add_migrations(proj)
    env, mark = shim_env(proj.root, "batch.sql", when)
    process = start_d1ops(["--config", str(proj.config), "migrate", "dev", "--json"], env)
    wait_for(mark, process)

    out, err = interrupt_and_wait(process, signal.SIGINT)  # exits, pipes closed, no process of it left

    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["exit_code"] == 130
    on_db = applied_names(proj)
    expected = "applied" if when == "after" else "not applied"
    assert {m["name"]: m["result"] for m in report["migrations"]} == dict.fromkeys(NEW, expected)
    assert (set(NEW) <= set(on_db)) == (when == "after")
    said = "applied: 0003_tags.sql, 0004_labels.sql" if when == "after" else "none of them is applied"
    assert f"Read back from the database: {said}" in err
    filed = json.loads(Path(report["report_path"]).read_text())
    assert filed["migrations"] == report["migrations"] and filed["exit_code"] == 130
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]


def test_a_remote_restore_whose_answer_was_lost_prints_the_ways_back(
    tmp_path: Path,
    api: CloudflareAPI,  # noqa: F811
) -> None:
    proj, _ = staging_project(tmp_path, api, STAGING_ONLY_NO_BACKUP)
    assert proj.run("migrate", "staging").exit_code == 0
    backup = proj.run("backup", "--env", "staging", "--json")
    assert backup.exit_code == 0, output_of(backup)
    api.server.faults.add("drop-after-import")

    result = proj.run("restore", json.loads(backup.stdout)["path"], "--env", "staging", "--yes")

    assert result.exit_code == 1, output_of(result)
    said = " ".join(result.stderr.split())
    assert "The restore of staging did not finish (" in said and "it was not retried" in said
    assert "To undo it if it was applied: `d1ops restore " in said  # printed, not only in the report
    assert "(the verified pre-restore backup), or `d1ops restore --bookmark " in said
