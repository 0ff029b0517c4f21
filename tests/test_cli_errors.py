"""Errors as users meet them: one JSON document with --json, secrets masked but user data intact, config
mistakes named with their line, the MS column saying what it measured, and the unlock advice that survives a
second Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from d1ops.cli import cli
from d1ops.cli.base import render_run
from d1ops.run import sequence as pipeline
from d1ops.run.report import MigrationOutcome, RunReport
from tests.conftest import Proj, make_project


@pytest.fixture
def files_only(tmp_path: Path) -> Proj:
    """A project on disk; no database is touched by these tests."""
    return make_project(tmp_path / "project")


def json_failure(proj: Proj, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--config", str(proj.config), *args], catch_exceptions=False)
    assert result.exit_code != 0
    document = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
    assert document["exit_code"] == result.exit_code
    return document


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["status", "nope", "--json"], 2, "Unknown environment 'nope'"),
        (["execute", "dev", "--file", "missing.sql", "--json"], 2, "missing.sql does not exist"),
        (["migrate", "dev", "--json", "--no-such-option"], 2, "No such option '--no-such-option'"),
        (["backup", "--json", "--env"], 2, "Option '--env' requires an argument"),
        (["rollback", "--json"], 2, "Missing argument 'ENV'"),
    ],
)
def test_json_usage_and_env_errors_are_one_document(files_only: Proj, args: list[str], code: int, said: str) -> None:
    document = json_failure(files_only, *args)
    assert document["exit_code"] == code and said in document["error"]


def test_json_config_errors_are_one_document(files_only: Proj) -> None:
    text = files_only.config.read_text()
    files_only.config.write_text(
        text.replace("migrations_dir: migrations\n", "migrations_dir: migrations\nbackups_dir: x\n")
    )
    duplicate = json_failure(files_only, "status", "--json")
    assert duplicate["exit_code"] == 2
    assert "line 4: key 'backups_dir' is given twice (first on line 3)" in duplicate["error"]

    files_only.config.write_text(text.replace("migrations_dir: migrations", "migrations_dir: wrangler.toml"))
    a_file = json_failure(files_only, "migrate", "--json")
    assert "wrangler.toml is a file, not a folder" in a_file["error"] and a_file["exit_code"] == 2

    missing = CliRunner().invoke(cli, ["--config", str(files_only.root / "none.yaml"), "lint", "--json"])
    assert json.loads(missing.stdout) == {"error": missing.stderr.removeprefix("Error: ").strip(), "exit_code": 2}


def test_duplicate_keys_inside_an_environment_are_refused_with_their_line(files_only: Proj) -> None:
    text = files_only.config.read_text().replace(
        "    target: local\n    backup: skip\n", "    target: local\n    backup: skip\n    target: remote\n", 1
    )
    files_only.config.write_text(text)
    result = files_only.run("status")
    assert result.exit_code == 2
    assert "key 'target' is given twice" in result.stderr and "line 10" in result.stderr


def test_execute_json_masks_known_secrets_but_never_user_data(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok-7f3a9c1e5b2d")
    sql = (
        "SELECT 'sk_live_0123456789abcdef' AS api_key, 'Bearer eyJhbGciOiJIUzI1NiJ9.payload' AS header, "
        "'authorization=abcdefgh12345678' AS query, 'tok-7f3a9c1e5b2d' AS leaked"
    )
    result = proj.run("execute", "dev", "--command", sql, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["results"] == [
        {
            "api_key": "sk_live_0123456789abcdef",
            "header": "Bearer eyJhbGciOiJIUzI1NiJ9.payload",
            "query": "authorization=abcdefgh12345678",
            "leaked": "[REDACTED]",  # the value of a secret d1ops knows: masked wherever it appears
        }
    ]


def report_with(timings: list[str | None]) -> RunReport:
    report = RunReport(command="migrate", env="dev", target="local", dry_run=False, started_at="t")
    report.plan = [f"000{i}_x.sql" for i in range(len(timings))]
    report.migrations = [
        MigrationOutcome(n, "c", "applied", 12, timing=t) for n, t in zip(report.plan, timings, strict=True)
    ]
    return report


@pytest.mark.parametrize(
    ("timings", "header"),
    [(["database", "database"], "MS (IN DB)"), (["process"], "MS (WRANGLER CALL)"), (["database", "process"], "MS")],
)
def test_the_ms_column_says_what_it_measured(timings: list[str | None], header: str, capsys: Any) -> None:
    render_run(report_with(timings))
    first = capsys.readouterr().out.splitlines()[0].split()
    assert " ".join(first[2:]) == header


def test_a_second_ctrl_c_during_the_release_still_says_unlock(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")

    def first_ctrl_c(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "take_safety", first_ctrl_c)
    monkeypatch.setattr(pipeline, "release_lock", first_ctrl_c)  # the second Ctrl-C, while releasing
    result = proj.run("migrate", "dev")

    assert result.exit_code == 130
    assert "Run `d1ops unlock dev`." in result.stderr
    assert "interrupted" in result.stderr and "Nothing was applied to dev." in result.stderr
    reports = list((proj.root / "backups" / "dev" / "reports").glob("*-migrate.json"))
    filed = json.loads(reports[-1].read_text())
    assert filed["exit_code"] == 130 and any("d1ops unlock dev" in w for w in filed["warnings"])
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(1,)]  # held, as the message says


def test_a_remote_batch_without_times_shows_no_blank_ms_column(capsys: Any) -> None:
    report = report_with([None, None])
    report.target = "remote"
    for outcome in report.migrations:
        outcome.duration_ms = None
    render_run(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MIGRATION", "RESULT"]
    assert lines[2].split() == ["0000_x.sql", "applied"]
    assert "(One import for all of them: D1 reports no time per migration.)" in lines
