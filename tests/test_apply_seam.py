"""The one apply step (run/apply.py), checked at the wrangler seam: every batch that any command sends to change a
database opens with this run's lease guard, and a batch whose lease was taken over changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pytest_mock import MockerFixture

from d1ops.project.project import open_projects
from d1ops.run import sequence
from d1ops.wrangler.runner import Wrangler
from tests.conftest import Proj

GUARD = re.compile(r"INSERT INTO d1ops_lock\(id, owner, acquired_at\) SELECT 1, NULL, NULL WHERE NOT EXISTS")
BATCH = re.compile(r"^(batch|promote|rollback|execute|adopt|restore|\d{4}-.*)\.sql$|^\d{4}-")


def test_every_batch_any_command_sends_opens_with_the_lease_guard(proj: Proj, mocker: MockerFixture) -> None:
    sent: list[tuple[str, str, str]] = []  # (env, batch file name, its first line)
    real = Wrangler.execute

    def record(self: Wrangler, env: Any, *args: Any, **kwargs: Any) -> Any:
        file = kwargs.get("file")
        if isinstance(file, Path) and BATCH.match(file.name) and "d1ops-run-" in str(file.parent):
            sent.append((env.name, file.name, file.read_text(encoding="utf-8").splitlines()[0]))
        return real(self, env, *args, **kwargs)

    mocker.patch.object(Wrangler, "execute", autospec=True, side_effect=record)
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
    proj.write("migrations/down/0003_tags.sql", "DROP TABLE tags;\n")
    for args in (
        ("migrate", "dev"),
        ("migrate", "dev", "--one-by-one"),  # nothing pending: sends no batch
        ("execute", "dev", "--command", "INSERT INTO tags (name) VALUES ('ü')"),
        ("rollback", "dev"),
        ("migrate", "dev", "--one-by-one"),
        ("backup", "tags", "--env", "dev"),
        ("adopt", "staging", "--through", "0002_sample_data.sql", "--schema-from", "dev"),
    ):
        result = proj.run(*args)
        assert result.exit_code == 0, (args, result.output)
    backup = sorted((proj.root / "backups" / "dev").glob("*-tags*"))[-1]
    result = proj.run("restore", str(backup), "--env", "dev", "--yes")
    assert result.exit_code == 0, result.output

    names = [name for _, name, _ in sent]
    assert names[0] == "batch.sql" and "execute.sql" in names and "rollback.sql" in names
    assert "adopt.sql" in names and "restore.sql" in names and any(n.startswith("0000-") for n in names)
    for env, name, first in sent:
        assert GUARD.match(first), f"{name} on {env} opens with {first!r}, not the lease guard"


def test_an_adopt_whose_lease_was_taken_over_changes_nothing(proj: Proj, mocker: MockerFixture) -> None:
    project = open_projects(proj.config)[0]
    staging = project.config.env("staging")
    real = sequence.take_safety

    def safety_then_the_lease_is_taken_over(run: sequence.Run, change: sequence.Change) -> None:
        real(run, change)
        project.wrangler.execute(  # our lease expired meanwhile, and another run took it over
            staging,
            command="DELETE FROM d1ops_lock; INSERT INTO d1ops_lock VALUES "
            "(1, 'the next run', '2026-01-01T00:00:00Z', '2999-01-01T00:00:00Z')",
        )

    mocker.patch.object(sequence, "take_safety", side_effect=safety_then_the_lease_is_taken_over)
    result = proj.run("adopt", "staging", "--through", "0002_sample_data.sql", "--schema-from", "dev", "--json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "This run no longer held the lease on staging" in report["error"]
    assert "the next run holds it now" in report["error"]
    tables = proj.tables("staging")
    assert "users" not in tables and "posts" not in tables  # the schema from dev was not built
    assert proj.query("SELECT count(*) FROM d1_migrations", "staging") == [(0,)]  # nothing recorded
    assert proj.query("SELECT owner FROM d1ops_lock", "staging") == [("the next run",)]  # not ours to release
