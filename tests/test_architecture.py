"""What may import what (docs/architecture.md), read from the code's own import statements. The behaviour this
layering protects is tested where it happens: every batch opens with the lease guard (test_apply_seam.py)."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "d1ops"


def imports() -> dict[str, set[str]]:
    """module path (e.g. 'cli/base.py') → every module it imports, top level or inside a function."""
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[path.relative_to(SOURCE).as_posix()] = names
    return found


def importers(prefix: str) -> set[str]:
    return {m for m, names in imports().items() if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def test_the_top_of_the_package_holds_only_the_entry_point_and_the_errors() -> None:
    top = {p.name for p in SOURCE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "errors.py"}


def test_only_the_wrangler_seam_starts_processes_and_only_the_cli_imports_click() -> None:
    assert importers("sh") | importers("subprocess") == {"wrangler/runner.py"}
    assert {m for m in importers("click") if not m.startswith("cli/")} == set()


def test_the_cli_calls_only_the_core_never_the_seam_nor_tracking() -> None:
    for module in importers("d1ops.wrangler") | importers("d1ops.run.tracking") | importers("d1ops.sql"):
        assert not module.startswith("cli/"), module


def test_the_sql_layer_starts_no_process() -> None:
    for module, names in imports().items():
        if module.startswith("sql/"):
            assert not {n for n in names if n.startswith("d1ops.wrangler.runner.Wrangler")}, module
            assert not {n for n in names if n.startswith(("d1ops.run", "d1ops.changes", "d1ops.backups"))}, module


def test_changes_send_nothing_themselves_the_run_sends_their_batches() -> None:
    # A change may read (its plan needs the schema), but only run/apply.py writes the lease guard around a batch
    # and sends it; no change builds the guard or the release itself.
    for module in importers("d1ops.run.lease.lease_guard_sql") | importers("d1ops.run.lease.release_lock_sql"):
        assert module in {"run/apply.py", "run/fleet.py"}, module
    assert {m for m in importers("d1ops.run.apply.send_batch")} >= {
        "changes/migrate.py",
        "changes/rollback.py",
        "changes/execute.py",
        "changes/adopt.py",
        "changes/restore.py",
    }


def test_the_four_questions_are_answered_by_file_names() -> None:
    # where the lock is taken, where the run report is written, where the backup before a migration happens,
    # where a restore is planned
    for path in ("run/lease.py", "run/report.py", "run/safety.py", "changes/restore.py"):
        assert (SOURCE / path).is_file(), path
