"""Backups: layout, manifest, verification, failures that leave nothing half-written, and the pipeline's rule
that no migration reaches an environment that requires a backup unless a verified one was taken first."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from d1ops.errors import WranglerError
from d1ops.wrangler.runner import Wrangler
from tests.conftest import WRANGLER_VERSION, Proj

REQUIRED_DEV = """\
database: DB
environments:
  - name: dev
    target: local
    backup: required
  - name: staging
    target: local
    wrangler_env: staging
"""


def backup_folders(p: Proj, env: str = "dev") -> list[Path]:
    folder = p.root / "backups" / env
    return sorted(c for c in folder.iterdir() if c.name != "reports") if folder.is_dir() else []


def test_backup_one_table_writes_a_verified_private_backup(proj: Proj) -> None:
    result = proj.run("backup", "users", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["wrangler_processes"] == 2  # the schema read and the export, side by side
    folder = Path(summary["path"])
    assert folder.parent == proj.root / "backups" / "dev" and folder.name.endswith("-users")
    assert sorted(p.name for p in folder.iterdir()) == ["dump.sql", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["env"] == "dev" and manifest["database"] == "DB" and manifest["target"] == "local"
    assert manifest["tables"] == [{"name": "users", "rows": 4}]  # counted in the dump
    assert manifest["live_rows"] == {"users": 4}  # read with the schema, in the same process: information only
    assert manifest["migration_head"] == "0002_sample_data.sql" and manifest["whole_database"] is False
    assert manifest["wrangler_version"] == WRANGLER_VERSION
    assert manifest["verified"] is True and manifest["verify_level"] == "quick"
    assert manifest["started_at"] <= manifest["finished_at"]
    assert manifest["files"][0]["name"] == "dump.sql" and manifest["files"][0]["size"] > 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700  # backups/dev/, as the README says
    assert stat.S_IMODE(folder.parent.parent.stat().st_mode) == 0o700  # backups/
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    assert 'INSERT INTO "users"' in (folder / "dump.sql").read_text()


def test_backup_json_format_streams_rows_of_each_table(proj: Proj) -> None:
    result = proj.run("backup", "users", "settings", "--format", "json", "--json")
    assert result.exit_code == 0, result.output
    folder = Path(json.loads(result.stdout)["path"])
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "schema.sql", "settings.json", "users.json"]
    users = json.loads((folder / "users.json").read_text())
    assert [u["email"] for u in users] == [
        "ada@example.com",
        "grace@example.com",
        "alan@example.com",
        "edsger@example.com",
    ]
    assert json.loads((folder / "manifest.json").read_text())["verified"] is True


def test_table_names_are_checked_before_anything_runs(proj: Proj) -> None:
    result = proj.run("backup", "users; DROP TABLE users")
    assert result.exit_code == 2
    assert "No such table in dev: 'users; DROP TABLE users'" in result.output
    assert "users" in proj.tables()
    missing = proj.run("backup", "user")
    assert missing.exit_code == 2 and "'user' (did you mean 'users'?)" in missing.output
    assert backup_folders(proj) == []


def test_backup_of_unknown_env_is_a_usage_error(proj: Proj) -> None:
    result = proj.run("backup", "--env", "prod")
    assert result.exit_code == 2 and "Unknown environment 'prod' (did you mean 'production'?)" in result.output


def test_backup_into_a_read_only_place_fails_cleanly(proj: Proj) -> None:
    # /sys refuses new folders even to root: a real read-only location, no mock.
    proj.config.write_text(proj.config.read_text().replace("backups_dir: backups", "backups_dir: /sys/d1ops-backups"))
    result = proj.run("backup", "users")
    assert result.exit_code == 1
    assert "Backup of dev failed" in result.output and "No backup was kept" in result.output
    assert "/sys/d1ops-backups" in result.output


def _fail_export(monkeypatch: pytest.MonkeyPatch, *, write: bytes, message: str) -> list[list[str]]:
    """Fault at the wrangler seam: `d1 export` writes part of a file, then fails."""
    real_run = Wrangler.run
    calls: list[list[str]] = []

    def run(self: Wrangler, args: list[str], **kwargs: object) -> str:
        calls.append(args)
        if args[:2] == ["d1", "export"]:
            Path(args[args.index("--output") + 1]).write_bytes(write)
            raise WranglerError(["wrangler", *args], 1, message)
        return real_run(self, args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Wrangler, "run", run)
    return calls


def test_disk_full_during_export_leaves_no_backup_folder(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fail_export(
        monkeypatch,
        write=b"PRAGMA defer_foreign_keys=TRUE;\nINSERT INTO",
        message="ENOSPC: no space left on device, write",
    )
    result = proj.run("backup", "users")
    assert result.exit_code == 1
    assert "Backup of dev failed: ENOSPC: no space left on device, write" in result.output
    # The export (beside the schema read, which a named table's export does not wait for), and nothing after it.
    assert sorted(c[:2] for c in calls) == [["d1", "execute"], ["d1", "export"]]
    assert "--command" in next(c for c in calls if c[1] == "execute")
    assert list((proj.root / "backups" / "dev").iterdir()) == []  # no partial folder, hidden or not


def _export_text(p: Proj, env: str = "dev") -> str:
    out = p.root / f"export-{len(list(p.root.glob('export-*')))}.sql"
    result = p.run("export", env, "--output", str(out))
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_export_fault_during_migrate_applies_nothing(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.config.write_text(REQUIRED_DEV)
    proj.write(
        "migrations/0003_tags.sql",
        "-- d1ops: destructive a test\nCREATE TABLE tags (id INTEGER PRIMARY KEY);\nDELETE FROM settings;\n",
    )
    before = _export_text(proj)
    calls = _fail_export(monkeypatch, write=b"", message="D1 export crashed")
    result = proj.run("migrate", "dev")
    assert result.exit_code == 1
    assert "Backup of dev failed: D1 export crashed" in result.output
    assert "Nothing was applied to dev." in result.output
    assert not any(c[:2] == ["d1", "execute"] and "--file" in c for c in calls)  # no migration batch was sent
    monkeypatch.undo()
    after = _export_text(proj)
    assert after.replace("d1ops_lock", "") == before.replace("d1ops_lock", "")
    assert proj.query("SELECT count(*) FROM d1ops_lock") == [(0,)]


def test_corrupted_dump_fails_verification_and_blocks_the_migration(
    proj: Proj, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj.config.write_text(REQUIRED_DEV)
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    real_export = Wrangler.export

    def corrupt_export(self: Wrangler, env, output: Path, **kwargs) -> None:  # type: ignore[no-untyped-def]
        real_export(self, env, output, **kwargs)
        data = bytearray(output.read_bytes())
        at = data.index(b"INSERT INTO")
        data[at] = ord("J")  # one byte changed
        output.write_bytes(bytes(data))

    monkeypatch.setattr(Wrangler, "export", corrupt_export)
    result = proj.run("migrate", "dev")
    assert result.exit_code == 1
    assert "did not verify: the dump does not load as D1 loads it" in result.output
    assert "Nothing was applied to dev." in result.output
    assert "tags" not in proj.tables()
    kept = backup_folders(proj)
    assert len(kept) == 1 and json.loads((kept[0] / "manifest.json").read_text())["verified"] is False


def test_verify_detects_a_byte_changed_after_the_backup(proj: Proj) -> None:
    folder = Path(json.loads(proj.run("backup", "users", "--json").stdout)["path"])
    dump = folder / "dump.sql"
    data = bytearray(dump.read_bytes())
    data[-3] ^= 1
    dump.write_bytes(bytes(data))
    result = proj.run("backups", "verify", str(folder))
    assert result.exit_code == 1
    assert "dump.sql: sha256 does not match the manifest" in result.output
    assert json.loads((folder / "manifest.json").read_text())["verified"] is False


def test_full_verification_loads_into_a_scratch_d1(proj: Proj) -> None:
    result = proj.run("backup", "--verify", "full", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["verify_level"] == "full"
    assert summary["tables"]["users"] == 4 and summary["tables"]["d1_migrations"] == 2
    assert summary["wrangler_processes"] == 3  # schema, export, the scratch load (rows counted in its file)
    # the scratch project lived in a temporary folder: the real project's local state has one database only
    assert proj.query("SELECT count(*) FROM users") == [(4,)]


def test_whole_database_json_backup_verifies_in_a_scratch_d1(proj: Proj) -> None:
    # foreign keys between tables: the SQL generated from JSON must create every table before any row
    result = proj.run("backup", "--format", "json", "--verify", "full", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["verify_level"] == "full" and summary["tables"]["sessions"] == 3


def test_migrate_with_required_backup_records_backup_in_report(proj: Proj) -> None:
    proj.config.write_text(REQUIRED_DEV)
    proj.write("migrations/0003_tags.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    result = proj.run("migrate", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads((Path(report["backup"]["path"]) / "manifest.json").read_text())
    assert manifest["migration_head"] == "0002_sample_data.sql" and manifest["whole_database"] is True
    assert manifest["verified"] is True
    assert "d1ops_lock" not in [t["name"] for t in manifest["tables"]]
    # nothing to apply: no backup taken
    again = json.loads(proj.run("migrate", "--json").stdout)
    assert again["backup"] is None and len(backup_folders(proj)) == 1


def test_backups_list_and_prune_keep_newest_verified(proj: Proj) -> None:
    for _ in range(3):
        assert proj.run("backup", "settings").exit_code == 0
    folders = backup_folders(proj)
    newest = folders[-1]
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["verified"] = False  # the newest is unverified: prune must keep the newest verified one too
    (newest / "manifest.json").write_text(json.dumps(manifest))

    listed = json.loads(proj.run("backups", "list", "dev", "--json").stdout)
    assert [e["name"] for e in listed] == [f.name for f in reversed(folders)]
    assert listed[0]["verified"] is False and listed[1]["verified"] is True and listed[0]["rows"] == 4

    result = proj.run("backups", "prune", "dev", "--keep", "1")
    assert result.exit_code == 0
    assert [f.name for f in backup_folders(proj)] == [folders[1].name, folders[2].name]
    human = proj.run("backups", "list")
    assert "settings" in human.output and "VERIFIED" in human.output


def test_export_command_writes_sql_and_json(proj: Proj) -> None:
    out = proj.root / "users_backup.json"
    result = proj.run("export", "dev", "--table", "users", "--output", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    assert "users: 4 rows" in result.output
    assert len(json.loads(out.read_text())) == 4
    sql = proj.root / "all.sql"
    assert proj.run("export", "dev", "--output", str(sql)).exit_code == 0
    assert "CREATE TABLE users" in sql.read_text()
    two = proj.run("export", "dev", "--table", "users", "--table", "posts", "--output", str(out), "--format", "json")
    assert two.exit_code == 2 and "give exactly one --table" in two.output


def test_compact_dump_joins_one_row_inserts_and_keeps_every_value(tmp_path: Path) -> None:
    import io
    import sqlite3

    from d1ops.backups.dumpfile import load_dump, write_compact_dump

    dump = tmp_path / "dump.sql"
    values = ["plain", "it's", "semi; colon", "close);paren", "new\nline", None]
    lines = ["PRAGMA defer_foreign_keys=TRUE;", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"]
    for i, v in enumerate(values * 100):
        literal = "NULL" if v is None else "'" + v.replace("'", "''") + "'"
        lines.append(f'INSERT INTO "t" VALUES({i},{literal});')
    lines += ["CREATE TABLE u(x);", 'INSERT INTO "u" VALUES(1);', "CREATE INDEX t_v ON t(v);"]
    dump.write_text("\n".join(lines))
    out = io.StringIO()
    write_compact_dump(dump, out)
    compact = tmp_path / "compact.sql"
    compact.write_text(out.getvalue())
    assert out.getvalue().count('INSERT INTO "t"') == 3  # 600 rows, 200 per statement
    for name, path in (("a", dump), ("b", compact)):
        load_dump(path, tmp_path / f"{name}.sqlite")
    a, b = (sqlite3.connect(tmp_path / f"{n}.sqlite") for n in "ab")
    assert a.execute("SELECT * FROM t ORDER BY id").fetchall() == b.execute("SELECT * FROM t ORDER BY id").fetchall()
    assert b.execute("SELECT count(*) FROM u").fetchone() == (1,)


def test_verification_never_loses_a_good_backup(proj: Proj, monkeypatch: pytest.MonkeyPatch) -> None:
    from d1ops.errors import ContentionError

    folder = Path(json.loads(proj.run("backup", "users", "--verify", "full", "--json").stdout)["path"])
    manifest_path = folder / "manifest.json"
    recorded = manifest_path.read_bytes()
    assert json.loads(recorded)["verify_level"] == "full"

    # A re-verification that cannot finish (contention, a timeout) is no verdict: the manifest stays as it was.
    real_execute = Wrangler.execute
    for fault in (
        ContentionError(["wrangler"], 1, "database is locked: SQLITE_BUSY"),
        WranglerError(["wrangler"], None, "wrangler did not finish within 600 s"),
    ):

        def execute(self: Wrangler, env, *, file=None, fault=fault, **kwargs):  # type: ignore[no-untyped-def]
            if file is not None:
                raise fault
            return real_execute(self, env, file=file, **kwargs)

        monkeypatch.setattr(Wrangler, "execute", execute)
        result = proj.run("backups", "verify", str(folder), "--full")
        assert result.exit_code == 1
        assert "could not finish" in result.output and "The manifest was left as it was" in result.output
        assert manifest_path.read_bytes() == recorded
    monkeypatch.undo()

    # quick never downgrades a full that still holds
    quick = proj.run("backups", "verify", str(folder))
    assert quick.exit_code == 0 and "verified (full)" in quick.output
    assert json.loads(manifest_path.read_text())["verify_level"] == "full"

    # a manifest must list the files it vouches for
    other = [{"name": "other.sql", "sha256": "0", "size": 0}]
    for files, problem in (([], "lists no files"), (other, "does not vouch for dump.sql")):
        manifest = json.loads(recorded)
        manifest["files"] = files
        manifest_path.write_text(json.dumps(manifest))
        result = proj.run("backups", "verify", str(folder))
        assert result.exit_code == 1 and problem in result.output
        assert json.loads(manifest_path.read_text())["verified"] is False
