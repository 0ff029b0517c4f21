"""The architecture the README describes, checked on the source: one run, one lock, one report writer, one
multi-row builder, one statement tokenizer, one process seam; modules of one idea, small enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "d1ops"
MODULES = {p.relative_to(SOURCE).as_posix(): p.read_text(encoding="utf-8") for p in SOURCE.rglob("*.py")}


def where(pattern: str) -> set[str]:
    return {name for name, text in MODULES.items() if re.search(pattern, text)}


def test_one_place_takes_the_lock_and_one_writes_run_reports() -> None:
    assert where(r"INSERT OR IGNORE INTO \{LOCK_TABLE\}") == {"run/tracking.py"}
    assert where(r"lock_and_read_state\(") == {"run/tracking.py", "run/sequence.py"}
    assert where(r"\bREPORTS\b.*\.json") == {"run/sequence.py"}
    assert where(r"def write_report") == {"run/sequence.py"}


def test_one_multi_row_builder_and_one_statement_tokenizer() -> None:
    assert where(r'",\\n"\.join\(') == {"sql/text.py"}
    assert where(r"complete_statement") == {"sql/text.py"}
    assert where(r"def (split_statements|iter_statements)\b") == {"sql/text.py"}


def test_one_process_seam_and_click_only_in_the_cli() -> None:
    assert where(r"(?m)^import (sh|subprocess)\b|^from (sh|subprocess) import") == {"wrangler/runner.py"}
    assert {n for n in where(r"(?m)^import click|^from click") if not n.startswith("cli/")} == set()
    assert where(r"(?m)^import click") >= {"cli/base.py"}


def test_every_change_goes_through_the_run() -> None:
    # a wrangler call that writes (execute with a file or a command built by a plan) happens in plans/ or in
    # the modules the run drives; no command module calls wrangler itself
    assert {n for n in where(r"\.wrangler\.execute\(") if n.startswith("cli/")} == set()
    changes = {n for n in where(r"class \w+\((Change|RestoreChange|BackupRestore)\)")}
    assert changes == {
        "changes/adopt.py",
        "changes/execute.py",
        "changes/migrate.py",
        "changes/restore.py",
        "changes/restore_database.py",
        "changes/restore_tables.py",
        "changes/rollback.py",
        "changes/unlock.py",
    }


def test_modules_and_classes_stay_small() -> None:
    too_long = {n: len(t.splitlines()) for n, t in MODULES.items() if len(t.splitlines()) > 430}
    assert too_long == {}
    big_classes = {}
    for name, text in MODULES.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno and node.end_lineno - node.lineno > 150:
                big_classes[f"{name}:{node.name}"] = node.end_lineno - node.lineno
    assert big_classes == {}
