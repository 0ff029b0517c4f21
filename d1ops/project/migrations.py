"""Migration files on disk: which files, in which order, their checksums, and what is wrong with them.

The order is wrangler 4.86.0's own (`d1 migrations apply`): the `*.sql` names sorted as strings, then
stable-sorted by `parseInt(name.split("_")[0])` — numeric prefix, then name. Files wrangler would apply,
d1ops applies in the same order.

Rollback files: `down/NNNN_name.sql` (wrangler reads only the folder's top level, so it never sees them), or
`NNNN_name.down.sql` beside the migration. d1ops never applies the latter as a migration, but wrangler would
(it takes every `*.sql`), so they get a warning: move them into `down/`.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from d1ops.errors import ConfigError, UsageError
from d1ops.sql.drift import DriftItem, check_drift, expected_schema, schema_after_adopt
from d1ops.sql.lint import Finding, lint_history
from d1ops.sql.schema import DatabaseSchema
from d1ops.sql.text import UnfinishedStatement, split_statements

__all__ = ["Finding", "MigrationFile", "MigrationSet", "discover_migrations", "lint_errors"]

DOWN_SUFFIX = ".down.sql"
IRREVERSIBLE = "-- d1ops: irreversible"
DOWN_DIR = "down"
STRICT_NAME = re.compile(r"^(\d{3,4})_[A-Za-z0-9][A-Za-z0-9_-]*\.sql$")
WIDTH_WORDS = {3: "three", 4: "four"}
NEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_ -]*$")


@dataclass(frozen=True)
class MigrationFile:
    name: str
    path: Path
    number: int | None
    checksum: str
    down_path: Path | None = None

    def read_sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationSet:
    directory: Path
    files: tuple[MigrationFile, ...]
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def by_name(self) -> dict[str, MigrationFile]:
        return {m.name: m for m in self.files}

    def raise_for_errors(self, *, except_rules: tuple[str, ...] = ()) -> None:
        """Refuse a folder with errors (those of `except_rules` left to the caller: rehearse shows their effect)."""
        errors = [f for f in self.errors if f.rule not in except_rules]
        if errors:
            lines = "\n".join(f"  {f.file}: {f.message}" for f in errors)
            raise ConfigError(f"The migrations folder {self.directory.name}/ has errors:\n{lines}")


def prefix_number(name: str) -> int | None:
    """JavaScript's parseInt(name.split("_")[0]): leading digits of the first `_` part, or None (NaN)."""
    match = re.match(r"\s*([+-]?\d+)", name.split("_")[0])
    return int(match.group(1)) if match else None


def _utf16_key(name: str) -> bytes:
    # JavaScript sorts strings by UTF-16 code units.
    return name.encode("utf-16-be")


def _wrangler_compare(a: str, b: str) -> int:
    na, nb = prefix_number(a), prefix_number(b)
    x = math.nan if na is None else na
    y = math.nan if nb is None else nb
    if x < y:
        return -1
    if x > y:
        return 1
    return 0


def wrangler_order(names: list[str]) -> list[str]:
    """Order names exactly as `wrangler d1 migrations apply` does."""
    by_string = sorted(names, key=_utf16_key)
    return sorted(by_string, key=functools.cmp_to_key(_wrangler_compare))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def discover_migrations(directory: Path, baseline: str | None = None) -> MigrationSet:
    """Read the migrations folder: files in wrangler's order, checksums, and findings.

    After `baseline` (all files when it is None) a duplicate number or a name not of the form
    NNNN_name.sql is an error and a gap a warning; at or before it nothing is reported. A file that is not
    UTF-8 is always an error.
    """
    if not directory.is_dir():
        raise ConfigError(
            f"Migrations folder {directory} does not exist. Create it, or set 'migrations_dir' in "
            "environments.yaml (or migrations_dir in the wrangler config)."
        )
    entries = {p.name: p for p in directory.iterdir() if p.name.endswith(".sql") and p.is_file()}
    beside = {n[: -len(DOWN_SUFFIX)] + ".sql": p for n, p in entries.items() if n.endswith(DOWN_SUFFIX)}
    in_down_dir = {}
    if (directory / DOWN_DIR).is_dir():
        in_down_dir = {p.name: p for p in (directory / DOWN_DIR).glob("*.sql") if p.is_file()}
    downs = {**beside, **in_down_dir}
    names = wrangler_order([n for n in entries if not n.endswith(DOWN_SUFFIX)])

    findings: list[Finding] = []
    files: list[MigrationFile] = []
    for name in names:
        path = entries[name]
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            findings.append(
                Finding("error", name, f"is not UTF-8 (byte {exc.start}); wrangler reads files as UTF-8. Re-save it.")
            )
        files.append(
            MigrationFile(
                name=name,
                path=path,
                number=prefix_number(name),
                checksum=hashlib.sha256(data).hexdigest(),
                down_path=downs.get(name),
            )
        )
    for down_for, path in sorted(beside.items()):
        findings.append(
            Finding(
                "warning",
                path.name,
                "wrangler d1 migrations apply would run this rollback as a migration; "
                f"move it to {DOWN_DIR}/{down_for}.",
            )
        )
    for down_for, path in sorted(downs.items()):
        if down_for not in entries:
            shown = path.name if down_for in beside and down_for not in in_down_dir else f"{DOWN_DIR}/{path.name}"
            findings.append(Finding("warning", shown, f"is a rollback file for {down_for}, which does not exist."))

    if baseline is not None and baseline not in entries:
        close = [n for n in names if n == baseline + ".sql"] or difflib.get_close_matches(baseline, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"environments.yaml: key 'baseline': {baseline} is not a file in {directory.name}/.{hint} "
            "Set it to the newest migration of the adopted history (its full file name), or null."
        )
    judged = files[names.index(baseline) + 1 :] if baseline else files
    findings.extend(_judge_names(judged, files[: len(files) - len(judged)]))
    for m in judged:
        text = _text_or_none(m.path)
        if text is None:
            continue  # not UTF-8: reported above, and nothing in it can be judged
        problems = lint_sql(text)
        findings.extend(
            Finding("error", m.name, p, rule="transaction-statement" if "transaction statement" in p else "")
            for p in problems
        )
        if not problems and not split_statements(text):
            findings.append(Finding("warning", m.name, "holds no SQL statement: is it finished?"))
        if m.down_path is None:
            findings.append(
                Finding(
                    "warning",
                    m.name,
                    f"has no rollback file {DOWN_DIR}/{m.name}: `d1ops rollback` cannot undo it. Write the "
                    f"statements that undo it there, or a first line `{IRREVERSIBLE} <reason>`.",
                )
            )
    texts = [(m.name, _text_or_empty(m.path)) for m in files]
    downs_judged = [(f"{DOWN_DIR}/{m.name}", _text_or_empty(m.down_path)) for m in judged if m.down_path]
    findings.extend(lint_history(texts, judged_from=len(files) - len(judged), downs=downs_judged))
    return MigrationSet(directory=directory, files=tuple(files), findings=tuple(findings))


def schema_drift(
    migrations: MigrationSet,
    applied: list[str],
    live: DatabaseSchema | None,
    cache_dir: Path,
    recorded: Callable[[], dict[str, DatabaseSchema]] | None = None,
) -> list[DriftItem] | None:
    """The objects of a live schema unlike what its applied migrations make, replayed here. A history that does
    not replay on an empty database is held to what adopt recorded (`recorded`: called only then), plus the
    migrations applied after it. None: cannot
    tell (no schema read, a migration applied there has no file here, nothing replays)."""
    files = migrations.by_name()
    if live is not None and not applied:
        return []  # no history recorded: nothing to hold it to (a database made by hand is adopted, not drifted)
    if live is None or any(name not in files for name in applied):
        return None
    expected = expected_schema(
        [(files[n].name, files[n].checksum, _text_or_empty(files[n].path)) for n in applied], cache_dir
    )
    if expected is None and recorded is not None:
        expected = schema_after_adopt([(n, _text_or_empty(files[n].path)) for n in applied], recorded())
    return None if expected is None else check_drift(expected, live)


def lint_errors(migrations: MigrationSet) -> list[Finding]:
    """The findings that make migrate refuse (lint's errors: names, numbering, SQL D1 would mishandle)."""
    return migrations.errors


_TRANSACTION = re.compile(r"^(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


def _text_or_empty(path: Path) -> str:
    return _text_or_none(path) or ""


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # already reported


def lint_sql(sql: str) -> list[str]:
    """What in a migration fails in D1 (an unfinished statement), or works on the local D1 but fails on a remote
    one (a transaction statement)."""
    problems = []
    try:
        statements = split_statements(sql)
    except UnfinishedStatement as exc:
        return [f"{exc.message}: D1 would refuse the file. Close it (or finish the statement)."]
    for statement in statements:
        match = _TRANSACTION.match(statement)
        if match:
            problems.append(
                f"has a transaction statement ({statement.splitlines()[0][:40]}): D1 runs each file in a "
                "transaction of its own. Locally wrangler strips one BEGIN TRANSACTION/COMMIT pair, but remote D1 "
                "rejects them, so this would pass on dev and fail in production. Remove it."
            )
            break
    return problems


def prefix_width(names: list[str]) -> int:
    """How many digits these files' numbers have: 3 (001_init.sql) or 4 (wrangler's 0001_…, drizzle's 0000_…),
    as most of them have them (4 on a tie, and without any). Lint judges the files after `baseline` by it."""
    widths = [len(match.group(1)) for match in map(STRICT_NAME.match, names) if match]
    return 3 if widths.count(3) > widths.count(4) else 4


def next_width(names: list[str]) -> int:
    """The width `new` writes: that of the newest (highest-numbered) file, so a history that moved from 001_… to
    0007_… goes on with four digits; 4 in a folder without a 3- or 4-digit name."""
    numbered = [(prefix_number(n), n) for n in names if STRICT_NAME.match(n)]
    newest = max(numbered, key=lambda pair: (pair[0] or 0, pair[1]), default=None)
    return prefix_width([newest[1]]) if newest else 4


def _judge_names(judged: list[MigrationFile], before: list[MigrationFile]) -> list[Finding]:
    findings: list[Finding] = []
    width = prefix_width([m.name for m in judged])
    pattern = "N" * width
    seen = {m.number for m in before if m.number is not None}
    previous = max(seen) if seen else None
    for m in judged:
        match = STRICT_NAME.match(m.name)
        if not match or len(match.group(1)) != width:
            findings.append(
                Finding(
                    "error",
                    m.name,
                    f"is not named {pattern}_name.sql ({WIDTH_WORDS[width]} digits like the folder's other files, "
                    "'_', letters/digits/'_'/'-').",
                )
            )
            continue
        assert m.number is not None
        if m.number in seen:
            findings.append(
                Finding(
                    "error",
                    m.name,
                    f"shares number {m.number:0{width}d} with another migration. If both are already applied "
                    "somewhere, do not rename them (wrangler tracks them by name): set "
                    f"`baseline: {m.name}` (or newer) in environments.yaml so lint judges only what follows; "
                    "if it is new, renumber it.",
                )
            )
        elif previous is not None and m.number > previous + 1:
            findings.append(
                Finding(
                    "warning",
                    m.name,
                    f"leaves a gap after {previous:0{width}d} (numbers {previous + 1:0{width}d}.. unused).",
                )
            )
        seen.add(m.number)
        previous = m.number if previous is None else max(previous, m.number)
    return findings


def new_migration(directory: Path, name: str, *, now: datetime | None = None) -> Path:
    """Create `NNNN_name.sql` with the next number (highest prefix + 1) and a header comment. The number has
    the width of the newest file (`next_width`: 036_… after 035_…; 0006_… after drizzle's 0000_…–0005_…),
    four digits in a new folder, as `wrangler d1 migrations create` writes them."""
    if not NEW_NAME.match(name):
        raise UsageError(f"Migration name '{name}' must be letters, digits, '_', '-' or spaces (e.g. add_tags).")
    directory.mkdir(parents=True, exist_ok=True)
    existing = [p.name for p in directory.glob("*.sql") if not p.name.endswith(DOWN_SUFFIX)]
    numbers = [prefix_number(n) for n in existing]
    number = max([n for n in numbers if n is not None] + [0]) + 1
    width = next_width(existing)
    slug = name.strip().replace(" ", "_")
    path = directory / f"{number:0{width}d}_{slug}.sql"
    if path.exists():
        raise UsageError(f"{path.name} already exists.")
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    down = directory / DOWN_DIR / path.name
    if down.exists():
        raise UsageError(f"{DOWN_DIR}/{path.name} already exists; remove it or pick another name.")
    path.write_text(
        f"-- Migration number: {number:0{width}d}\t{stamp}\n"
        f"-- {slug}: describe what this changes and why.\n"
        "-- D1 runs this file atomically: do not add BEGIN/COMMIT (remote D1 rejects them).\n"
        f"-- Rollback: the statements that undo it go in {DOWN_DIR}/{path.name} (`d1ops rollback` runs them).\n"
        "-- Optional, for `d1ops rehearse`: a line `-- d1ops: verify <SQL>` whose first column must be true.\n\n",
        encoding="utf-8",
    )
    down.parent.mkdir(exist_ok=True)
    down.write_text(
        f"-- Rollback of {path.name}: undo exactly what it does, newest statement first.\n"
        f"-- If it cannot be undone (it drops data), replace these lines with: {IRREVERSIBLE} <reason>\n\n",
        encoding="utf-8",
    )
    return path
