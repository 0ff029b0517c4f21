"""Every exit code the README documents is produced, here, by a real run of the command line; and the test
suite asserts each of them somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from d1ops.cli import cli
from tests.conftest import REPO, Proj

TESTS = Path(__file__).resolve().parent


def documented() -> dict[int, str]:
    """The README's `### Exit codes` table: {code: meaning}."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.M)
    assert rows, "README has no exit code table"
    return {int(code): meaning for code, meaning in rows}


def test_each_documented_exit_code_is_produced(proj: Proj) -> None:
    codes = documented()
    assert set(codes) == {0, 1, 2, 3, 130}
    produced: dict[int, str] = {}

    def record(*args: str) -> None:
        result = proj.run(*args)
        produced.setdefault(result.exit_code, " ".join(args))

    record("lint")  # 0
    record("migrate", "nowhere")  # 2: unknown environment, nothing touched
    proj.write("migrations/0003_tx.sql", "BEGIN TRANSACTION;\nCREATE TABLE t (id INTEGER);\nCOMMIT;\n")
    record("lint")  # 1: an error in the folder
    proj.write("migrations/0003_tx.sql", "CREATE TABLE t (id INTEGER);\n")
    record("status", "dev", "--check")  # 3: 0003 is pending on dev
    # 130 takes a signal to a real d1ops process: tests/test_outcomes.py sends one during the apply
    assert set(produced) == set(codes) - {130}, produced


def test_the_group_help_says_the_same_codes_as_the_readme() -> None:
    help_text = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    said = {
        int(c)
        for c in re.findall(r"(\d+) (?:done|operation failed|usage or config error|pending|interrupted)", help_text)
    }
    assert said == set(documented())


def test_the_suite_asserts_every_documented_code() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    asserted = {int(c) for c in re.findall(r"(?:exit_code|returncode|code) == (\d+)", source)}
    assert set(documented()) <= asserted, sorted(set(documented()) - asserted)
