"""A migration that ends in the middle of a statement is named by file and line by every command, and a bug
inside a run is an internal error (exit 1), never reported as an interruption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from d1ops.sql.text import UnfinishedStatement, split_statements
from d1ops.wrangler.runner import Wrangler
from tests.conftest import Proj

BAD = "CREATE TABLE notes (body TEXT);\nINSERT INTO notes VALUES ('unterminated);\n"
SAID = "0003_notes.sql: line 2: a string literal (') opened here is never closed"


@pytest.mark.parametrize(
    ("sql", "line", "what"),
    [
        ("SELECT 1;\nSELECT 'a;\n", 2, "a string literal (')"),
        ('SELECT 1;\n\nSELECT "a\n', 3, 'a quoted name (")'),
        ("SELECT 1;\n\nCREATE TRIGGER t AFTER INSERT ON x BEGIN\n  SELECT 1;\n", 3, "the statement that starts here"),
    ],
)
def test_an_unfinished_statement_names_its_line(sql: str, line: int, what: str) -> None:
    with pytest.raises(UnfinishedStatement) as raised:
        split_statements(sql)
    assert raised.value.line == line
    assert raised.value.message.startswith(f"line {line}: {what}")


def test_an_unterminated_string_is_named_by_file_and_line_by_every_command(proj: Proj) -> None:
    proj.write("migrations/0003_notes.sql", BAD)

    lint = proj.run("lint")
    assert lint.exit_code == 1 and SAID in lint.stdout
    assert "holds no SQL statement" not in lint.output

    status = proj.run("status", "dev")  # a traceback would raise here (catch_exceptions=False)
    assert status.exit_code == 0 and SAID in status.stderr

    migrate = proj.run("migrate", "dev", "--json")
    assert migrate.exit_code == 2, migrate.output
    report = json.loads(migrate.stdout)
    assert report["exit_code"] == 2 and SAID in report["error"]
    assert "interrupted" not in migrate.output.lower()

    rehearse = proj.run("rehearse", "dev")
    assert rehearse.exit_code == 2 and SAID in rehearse.stderr
    assert "notes" not in proj.tables()


def test_a_bug_during_the_apply_is_an_internal_error_not_an_interruption(
    proj: Proj, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    real = Wrangler.execute

    def execute(self: Wrangler, env: Any, **kwargs: Any) -> Any:
        file = kwargs.get("file")
        if file is not None and file.name == "batch.sql":
            real(self, env, **kwargs)
            raise RuntimeError("a bug after the batch ran")
        return real(self, env, **kwargs)

    monkeypatch.setattr(Wrangler, "execute", execute)
    result = proj.run("migrate", "dev", "--json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["exit_code"] == 1
    assert "d1ops stopped on an internal error (RuntimeError: a bug after the batch ran)" in report["error"]
    assert "Read back from the database: applied: 0003_tags.sql" in report["error"]
    assert "This is a bug in d1ops: please report it with the run report (RuntimeError at d1ops/" in report["error"]
    assert "interrupted" not in result.output.lower()
    assert any("stopped on an internal error (a bug in d1ops)" in w for w in report["warnings"])
    assert json.loads(Path(report["report_path"]).read_text())["exit_code"] == 1
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]
