"""The kill matrix: d1ops SIGKILLed at each step of a run, then the same command again.

Each step is hit exactly: a pause point of the run (D1OPS_PAUSE_AT) or a wrangler shim holding one call
(tests/wrangler_shim.py). After the kill: nothing of wrangler is left running, the database is consistent,
the next run applies what is missing exactly once, and the lease is taken over (expired) or released by unlock.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import Proj
from tests.wrangler_shim import gone, kill, shim_env, start_d1ops, wait_for

NEW = "0003_tags.sql"


def prepare(proj: Proj) -> None:
    """dev with a backup before each run (so the matrix has a backup step), and one pending migration."""
    text = proj.config.read_text().replace("    backup: skip\n", "    backup: optional\n", 1)
    proj.config.write_text(text)
    proj.write(f"migrations/{NEW}", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")


def start(proj: Proj, step: str, *, lease: str | None) -> tuple[int, int]:
    """Start `d1ops migrate dev`, wait for it to reach `step`; returns (d1ops pid, pid of a paused child or 0)."""
    folder = proj.root
    if step in ("locked", "before-report"):
        env, mark = dict(os.environ), folder / f"paused-{step}"
        env["D1OPS_PAUSE_AT"] = f"{step}:{mark}"
    else:
        env, mark = shim_env(
            folder, "d1 export" if step == "backup" else "batch.sql", "before" if step == "backup" else "after"
        )
    if lease is not None:
        env["D1OPS_LEASE_MINUTES"] = lease
    process = start_d1ops(["--config", str(proj.config), "migrate", "dev", "--json"], env)
    child = wait_for(mark, process)
    code, _, _ = kill(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    return process.pid, child if step in ("backup", "apply") else 0


def times_applied(proj: Proj) -> int:
    return proj.query(f"SELECT count(*) FROM d1_migrations WHERE name = '{NEW}'")[0][0]


@pytest.mark.parametrize("step", ["locked", "backup", "apply", "before-report"])
def test_a_run_killed_at_each_step_is_finished_by_the_next_run(proj: Proj, step: str) -> None:
    prepare(proj)
    _, child = start(proj, step, lease="0")  # a lease of 0 minutes: expired as soon as it is taken

    if child:  # wrangler (here: the shim's sleep, in wrangler's own session) died with d1ops
        assert gone(child), f"pid {child} outlived the SIGKILLed d1ops"
    holder = proj.query("SELECT owner FROM d1ops_lock")
    applied_by_killed_run = times_applied(proj)
    assert applied_by_killed_run == (1 if step in ("apply", "before-report") else 0)
    if step == "backup":
        assert [p.name for p in (proj.root / "backups" / "dev").iterdir() if p.name.endswith(".partial")]

    again = proj.run("migrate", "dev", "--json")

    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert times_applied(proj) == 1  # never twice
    assert "tags" in proj.tables()
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]
    if applied_by_killed_run:
        assert report["plan"] == [] and holder == []  # the apply's batch released the lease with the change
    else:
        assert report["plan"] == [NEW]
        assert any(f"took over the expired lease on dev of {holder[0][0]}" in w for w in report["warnings"])
        assert report["backup"]["verified"] is True
    leftovers = [p.name for p in (proj.root / "backups" / "dev").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the killed run's .partial folder was cleaned by this run


def test_a_live_lease_of_a_killed_run_refuses_until_unlocked(proj: Proj) -> None:
    prepare(proj)
    start(proj, "locked", lease=None)  # the default lease: hours
    holder = proj.query("SELECT owner FROM d1ops_lock")[0][0]

    refused = proj.run("migrate", "dev")
    assert refused.exit_code == 1
    assert f"Environment 'dev' is locked by {holder} since " in refused.stderr
    assert " ago); its lease expires at " in refused.stderr and "`d1ops unlock dev`" in refused.stderr
    assert times_applied(proj) == 0

    asked = proj.run("unlock", "dev")  # a live lease: shown with its holder and age, and asked (no terminal here)
    assert asked.exit_code == 1
    said = " ".join(asked.stderr.split())
    assert f"The lock on dev is held by {holder} since " in said and " ago), and its lease is live (until " in said
    assert "that run may still be going" in said and "there is no terminal to confirm on" in said
    assert proj.query("SELECT owner FROM d1ops_lock") == [(holder,)]

    unlocked = proj.run("unlock", "dev", "--yes")
    assert unlocked.exit_code == 0, unlocked.output
    assert holder in unlocked.stdout and "Its lease was still live." in unlocked.stdout
    again = proj.run("migrate", "dev")
    assert again.exit_code == 0, again.output
    assert times_applied(proj) == 1
