"""Migration files on disk: wrangler's order, checksums, baseline findings, `new` numbering."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from d1ops.errors import ConfigError, UsageError
from d1ops.project.migrations import MigrationSet, discover_migrations, new_migration, wrangler_order
from d1ops.sql.text import sql_for_batch


def names_and_numbering(found: MigrationSet) -> list[tuple[str, str]]:
    """The findings about names, numbering and encoding (not the missing-rollback-file warnings)."""
    return [(f.level, f.file) for f in found.findings if "has no rollback file" not in f.message]


def write(folder: Path, name: str, text: str = "SELECT 1;\n", data: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_order_is_numeric_prefix_then_name_like_wrangler_apply() -> None:
    names = ["010_b.sql", "2_a.sql", "0010_a.sql", "001_z.sql", "100_x.sql", "99_y.sql", "0002_b.sql"]
    assert wrangler_order(names) == [
        "001_z.sql",
        "0002_b.sql",
        "2_a.sql",
        "0010_a.sql",
        "010_b.sql",
        "99_y.sql",
        "100_x.sql",
    ]


def test_order_of_shared_prefix_is_by_utf16_code_units() -> None:
    assert wrangler_order(["0003_b.sql", "0003_B.sql", "0003_a.sql"]) == ["0003_B.sql", "0003_a.sql", "0003_b.sql"]


def test_discover_reads_sql_files_with_sha256_of_bytes(tmp_path: Path) -> None:
    write(tmp_path, "0002_two.sql", "CREATE TABLE b(x);")
    write(tmp_path, "0001_one.sql", "CREATE TABLE a(x);\n")
    write(tmp_path, "notes.txt", "not a migration")
    found = discover_migrations(tmp_path)
    assert [m.name for m in found.files] == ["0001_one.sql", "0002_two.sql"]
    assert found.files[1].checksum == hashlib.sha256(b"CREATE TABLE b(x);").hexdigest()
    assert names_and_numbering(found) == []


def test_rollback_files_are_not_migrations(tmp_path: Path) -> None:
    write(tmp_path, "0001_one.sql")
    write(tmp_path, "0001_one.down.sql", "DROP TABLE a;")
    write(tmp_path / "down", "0001_one.sql", "DROP TABLE a;")
    found = discover_migrations(tmp_path)
    assert [m.name for m in found.files] == ["0001_one.sql"]
    assert found.files[0].down_path == tmp_path / "down" / "0001_one.sql"
    # wrangler would apply a .down.sql beside the migrations: d1ops warns.
    assert [(f.level, f.file) for f in found.findings] == [("warning", "0001_one.down.sql")]
    assert "would run this rollback as a migration" in found.findings[0].message


def test_without_baseline_every_file_is_judged(tmp_path: Path) -> None:
    write(tmp_path, "0001_one.sql")
    write(tmp_path, "0001_dup.sql")
    write(tmp_path, "0004_gap.sql")
    write(tmp_path, "add-thing.sql")
    found = discover_migrations(tmp_path)
    assert names_and_numbering(found) == [
        ("error", "0001_one.sql"),
        ("warning", "0004_gap.sql"),
        ("error", "add-thing.sql"),
    ]
    with pytest.raises(ConfigError) as err:
        found.raise_for_errors()
    assert "0001_one.sql: shares number 0001 with another migration" in str(err.value)
    assert "add-thing.sql: is not named NNNN_name.sql" in str(err.value)


def test_baseline_silences_adopted_history_but_judges_what_follows(tmp_path: Path) -> None:
    for name in ["001_init.sql", "002_users.sql", "002_posts.sql", "005_tags.sql", "006_fts.sql"]:
        write(tmp_path, name)
    write(tmp_path, "0007_next.sql")
    write(tmp_path, "0009_after_gap.sql")
    write(tmp_path, "0009_same_number.sql")
    found = discover_migrations(tmp_path, baseline="006_fts.sql")
    assert names_and_numbering(found) == [
        ("warning", "0009_after_gap.sql"),
        ("error", "0009_same_number.sql"),
    ]


def test_unknown_baseline_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "0001_one.sql")
    with pytest.raises(ConfigError, match="key 'baseline': 0009_nope.sql is not a file"):
        discover_migrations(tmp_path, baseline="0009_nope.sql")


def test_non_utf8_file_is_an_error_even_before_baseline(tmp_path: Path) -> None:
    write(tmp_path, "0001_latin1.sql", data="INSERT INTO t VALUES ('café');".encode("latin-1"))
    write(tmp_path, "0002_ok.sql")
    found = discover_migrations(tmp_path, baseline="0002_ok.sql")
    assert [(f.level, f.file) for f in found.findings] == [("error", "0001_latin1.sql")]
    assert "not UTF-8" in found.findings[0].message


def test_a_non_utf8_file_after_baseline_gets_only_its_encoding_error(tmp_path: Path) -> None:
    write(tmp_path, "0001_latin1.sql", data="INSERT INTO t VALUES ('café');".encode("latin-1"))
    write(tmp_path / "down", "0001_latin1.sql", "DELETE FROM t;")
    found = discover_migrations(tmp_path)
    assert [(f.level, f.file) for f in found.findings] == [("error", "0001_latin1.sql")]  # not "holds no SQL"
    assert "is not UTF-8 (byte 26)" in found.findings[0].message


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        discover_migrations(tmp_path / "nope")


def test_new_takes_highest_prefix_plus_one_with_four_digits(tmp_path: Path) -> None:
    write(tmp_path, "001_init.sql")
    write(tmp_path, "0017_later.sql")
    path = new_migration(tmp_path, "add tags")
    assert path.name == "0018_add_tags.sql"
    text = path.read_text()
    assert text.startswith("-- Migration number: 0018\t")
    assert "BEGIN/COMMIT" in text
    assert "down/0018_add_tags.sql" in text  # the header points at the rollback file wrangler never applies
    down = tmp_path / "down" / "0018_add_tags.sql"
    assert "-- d1ops: irreversible" in down.read_text()
    found = discover_migrations(tmp_path, baseline="0017_later.sql")
    assert found.files[-1].down_path == down


def test_lint_warns_about_a_migration_after_baseline_without_a_rollback_file(tmp_path: Path) -> None:
    write(tmp_path, "0001_old.sql")
    write(tmp_path, "0002_new.sql")
    write(tmp_path, "0003_undone.sql")
    write(tmp_path / "down", "0003_undone.sql", "DROP TABLE x;")
    found = discover_migrations(tmp_path, baseline="0001_old.sql")
    assert [(f.level, f.file) for f in found.findings] == [("warning", "0002_new.sql")]
    assert "has no rollback file down/0002_new.sql" in found.findings[0].message


def test_lint_warns_about_a_migration_with_no_statement(tmp_path: Path) -> None:
    write(tmp_path, "0001_empty.sql", "-- TODO: write this\n")
    write(tmp_path / "down", "0001_empty.sql", "SELECT 1;")
    found = discover_migrations(tmp_path)
    assert [(f.level, f.file, f.message) for f in found.findings] == [
        ("warning", "0001_empty.sql", "holds no SQL statement: is it finished?")
    ]


def test_new_in_empty_folder_starts_at_0001(tmp_path: Path) -> None:
    assert new_migration(tmp_path / "m", "init").name == "0001_init.sql"


def test_new_refuses_a_name_that_is_not_a_plain_word(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be letters, digits"):
        new_migration(tmp_path, "../evil")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE TABLE a(x);", "CREATE TABLE a(x);\n"),
        ("CREATE TABLE a(x);\n-- trailing comment", "CREATE TABLE a(x);\n-- trailing comment\n"),
        ("CREATE TABLE a(x)", "CREATE TABLE a(x)\n;\n"),
    ],
)
def test_sql_for_batch_makes_appending_safe(sql: str, expected: str) -> None:
    assert sql_for_batch(sql) == expected


def test_transaction_statements_are_errors_because_remote_d1_rejects_them(tmp_path: Path) -> None:
    write(tmp_path, "0001_tx.sql", "-- wrapped\nBEGIN TRANSACTION;\nCREATE TABLE a(x);\nCOMMIT;\n")
    write(
        tmp_path,
        "0002_trigger.sql",
        "CREATE TABLE b(x);\nCREATE TRIGGER t AFTER INSERT ON b BEGIN\n  -- body\n  SELECT 1;\nEND;\n",
    )
    found = discover_migrations(tmp_path)
    assert names_and_numbering(found) == [("error", "0001_tx.sql")]
    assert "remote D1 rejects them" in found.findings[0].message
    # adopted history before the baseline is not judged
    assert names_and_numbering(discover_migrations(tmp_path, baseline="0001_tx.sql")) == []
