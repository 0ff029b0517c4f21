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
    assert where(r"INSERT OR IGNORE INTO \{LOCK_TABLE\}") == {"tracking.py"}
    assert where(r"lock_and_read_state\(") == {"tracking.py", "pipeline.py"}
    assert where(r"\bREPORTS\b.*\.json") == {"pipeline.py"}
    assert where(r"def write_report") == {"pipeline.py"}


def test_one_multi_row_builder_and_one_statement_tokenizer() -> None:
    assert where(r'",\\n"\.join\(') == {"sqltext.py"}
    assert where(r"complete_statement") == {"sqltext.py"}
    assert where(r"def (split_statements|iter_statements)\b") == {"sqltext.py"}


def test_one_process_seam_and_click_only_in_the_cli() -> None:
    assert where(r"(?m)^import (sh|subprocess)\b|^from (sh|subprocess) import") == {"wrangler.py"}
    assert {n for n in where(r"(?m)^import click|^from click") if not n.startswith("cli/")} == set()
    assert where(r"(?m)^import click") >= {"cli/base.py"}


def test_every_change_goes_through_the_run() -> None:
    # a wrangler call that writes (execute with a file or a command built by a plan) happens in plans/ or in
    # the modules the run drives; no command module calls wrangler itself
    assert {n for n in where(r"\.wrangler\.execute\(") if n.startswith("cli/")} == set()
    changes = {n for n in where(r"class \w+\((Change|RestoreChange|BackupRestore)\)")}
    assert changes == {
        "plans/adopt.py",
        "plans/execute.py",
        "plans/migrate.py",
        "plans/restore.py",
        "plans/restore_database.py",
        "plans/restore_tables.py",
        "plans/rollback.py",
        "plans/unlock.py",
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
