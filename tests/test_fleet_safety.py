"""A fleet's batches carry what every run's do: the drift check, the row guard, the import flow for a batch too
large for one request, and (--backup) a verified backup of each database before its apply.

All on the loopback D1 API (real HTTP, real SQLite per database); no wrangler process runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cloudflare.fixture import CloudflareAPI
from tests.conftest import Proj
from tests.test_fleet import FLEET_ONLY, fleet_project, make_fleet, recorded


def rows(api: CloudflareAPI, uuid: str, sql: str) -> list[dict[str, object]]:
    return api.server.execute(uuid, sql)[0]["results"]  # type: ignore[no-any-return]


def migrate(proj: Proj, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = proj.run("migrate", "tenants", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_a_hand_altered_tenant_is_refused_as_drifted_and_the_others_are_applied(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 4)
    code, _ = migrate(proj)
    assert code == 0
    api.server.execute(fleet["tenant-002"], "CREATE INDEX notes_by_body ON notes(body)")  # made by hand
    proj.write("migrations/0003_pins.sql", "ALTER TABLE notes ADD COLUMN pinned INTEGER;\n")
    code, dry = migrate(proj, "--dry-run")  # the dry run reads the schema too, and says so
    assert code == 1 and [d["result"] for d in dry["databases"]] == ["skipped", "skipped", "failed", "skipped"]
    assert dry["databases"][2]["error"].startswith("drifted: extra index notes_by_body")

    code, doc = migrate(proj, "--keep-going")
    assert code == 1
    by_name = {d["name"]: d for d in doc["databases"]}
    refused = by_name["tenant-002"]
    assert refused["result"] == "failed" and refused["error"].startswith("drifted: extra index notes_by_body")
    assert "--accept-drift" in refused["error"] and refused["drift"] == [
        "extra index notes_by_body (not made by any migration): `CREATE INDEX notes_by_body ON notes(body)`"
    ]
    assert [d["result"] for n, d in sorted(by_name.items()) if n != "tenant-002"] == ["applied"] * 3
    assert [n for n, _ in recorded(api, fleet["tenant-002"])] == ["0001_notes.sql", "0002_tags.sql"]
    assert rows(api, fleet["tenant-002"], "SELECT count(*) AS n FROM d1ops_lock") == [{"n": 0}]  # released
    columns = rows(api, fleet["tenant-002"], "SELECT name FROM pragma_table_info('notes')")
    assert "pinned" not in [c["name"] for c in columns]
    # The schema came with the lease (no extra call): list, then 3 per applied database, 2 for the refused one.
    assert doc["summary"]["api_calls"] == 1 + 3 * 3 + 2
    status = proj.run("status", "tenants", "--names")
    assert status.output.startswith("tenants: 4 databases: 3 at head, 1 failed or drifted."), status.output
    assert "drifted    tenant-002  schema: extra index notes_by_body" in status.output

    code, doc = migrate(proj, "--only", "tenant-002", "--accept-drift")
    assert code == 0, doc
    (accepted,) = doc["databases"]
    assert accepted["result"] == "applied" and accepted["applied"] == ["0003_pins.sql"]
    assert accepted["drift"] and "notes_by_body" in accepted["drift"][0]


AUTHORS = """\
    CREATE TABLE authors (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
    CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
      author_id INTEGER NOT NULL REFERENCES authors(id) ON DELETE CASCADE);
    """
# drizzle-kit's table rebuild: on D1 the DROP deletes every author first, and ON DELETE CASCADE empties the children.
REBUILD = """\
    -- d1ops: destructive rebuild of authors (drizzle-kit)
    PRAGMA foreign_keys=OFF;
    CREATE TABLE __new_authors (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, email TEXT);
    INSERT INTO __new_authors (id, name) SELECT id, name FROM authors;
    DROP TABLE authors;
    ALTER TABLE __new_authors RENAME TO authors;
    PRAGMA foreign_keys=ON;
    """


def authors_fleet(api: CloudflareAPI, root: Path, first: str, count: int = 3) -> tuple[Proj, dict[str, str]]:
    proj = fleet_project(root)
    for path in (proj.root / "migrations").glob("*.sql"):
        path.unlink()
    proj.write("migrations/0001_authors.sql", first)
    fleet = make_fleet(api, count)
    assert migrate(proj)[0] == 0
    for uuid in fleet.values():
        api.server.execute(uuid, "INSERT INTO authors(name) VALUES ('Zoë 王'), ('Ødegaard 🦀')")
    return proj, fleet


def test_a_migration_that_would_cascade_delete_fails_every_tenants_batch_and_keeps_the_rows(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    proj, fleet = authors_fleet(api, tmp_path / "project", AUTHORS)
    for uuid in fleet.values():
        api.server.execute(uuid, "INSERT INTO books(title, author_id) VALUES ('日本語の本', 1), ('Ünïcode', 2)")
    proj.write("migrations/0002_authors_email.sql", REBUILD)
    refused = proj.run("migrate", "tenants", "--keep-going")
    assert refused.exit_code == 2 and "DROP TABLE authors on D1 deletes its rows first" in refused.output
    # What lint cannot see: a DELETE … WHERE whose ON DELETE CASCADE empties books on D1.
    proj.write("migrations/0002_authors_email.sql", "DELETE FROM authors WHERE name LIKE 'Z%';\n")

    code, doc = migrate(proj, "--keep-going")
    assert code == 1
    assert [d["result"] for d in doc["databases"]] == ["failed"] * 3
    for d in doc["databases"]:
        assert d["failed_migration"] == "0002_authors_email.sql"
        assert "d1ops row guard: 0002_authors_email.sql would lose data: books lost 1 rows" in d["error"]
        assert "(ON DELETE CASCADE from DELETE FROM authors in 0002_authors_email.sql)" in d["error"]
        assert "Nothing was applied" in d["error"]
    assert "0002_authors_email.sql" in doc["error"]
    for uuid in fleet.values():
        assert rows(api, uuid, "SELECT count(*) AS n FROM books") == [{"n": 2}]
        assert rows(api, uuid, "SELECT count(*) AS n FROM authors") == [{"n": 2}]
        assert [n for n, _ in recorded(api, uuid)] == ["0001_authors.sql"]
        assert rows(api, uuid, "SELECT count(*) AS n FROM d1ops_lock") == [{"n": 0}]
    # Each refused database: lease+read, bookmark, the batch, release (no lock-row read: the guard's own error).
    assert doc["summary"]["api_calls"] == 1 + 4 * 3

    # row_guard: false behaves as elsewhere: a warning in every run, and the batch applies (the book is gone).
    proj.write("environments.yaml", FLEET_ONLY + "    row_guard: false\n")
    code, doc = migrate(proj, "--only", "tenant-000")
    assert code == 0, doc
    assert any("row_guard is off for tenants" in w for w in doc["warnings"])
    assert rows(api, fleet["tenant-000"], "SELECT count(*) AS n FROM books") == [{"n": 1}]
    text = proj.run("migrate", "tenants", "--only", "tenant-001")
    assert text.exit_code == 0 and "row_guard is off for tenants" in text.output


def test_the_rebuild_trap_on_children_made_by_hand_fails_the_batch_even_with_drift_accepted(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    """The migrations know no child of authors, so lint passes the rebuild; two tenants have one made by hand
    (drift, accepted here): there D1 would cascade-delete it, and the row guard fails that batch alone."""
    proj, fleet = authors_fleet(api, tmp_path / "project", AUTHORS.split("CREATE TABLE books")[0])
    for name in ("tenant-000", "tenant-002"):
        api.server.execute(
            fleet[name],
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES authors(id) ON DELETE CASCADE,"
            " body TEXT); INSERT INTO reviews(author_id, body) VALUES (1, 'très bien ✓'), (2, '五つ星'), (2, 'ok');",
        )
    proj.write("migrations/0002_authors_email.sql", REBUILD)

    code, doc = migrate(proj, "--keep-going", "--accept-drift")
    assert code == 1
    by_name = {d["name"]: d for d in doc["databases"]}
    assert by_name["tenant-001"]["result"] == "applied"
    for name in ("tenant-000", "tenant-002"):
        d = by_name[name]
        assert d["result"] == "failed" and d["drift"] and "reviews" in d["drift"][0]
        assert "reviews lost 3 rows (ON DELETE CASCADE from DROP TABLE authors in 0002_authors_email.sql)" in d["error"]
        assert rows(api, fleet[name], "SELECT count(*) AS n FROM reviews") == [{"n": 3}]
        columns = rows(api, fleet[name], "SELECT name FROM pragma_table_info('authors')")
        assert "email" not in [c["name"] for c in columns]
        assert [n for n, _ in recorded(api, fleet[name])] == ["0001_authors.sql"]


def big_migration(rows_: int) -> str:
    """Many small INSERTs of multi-byte text: each statement far below D1's limit, the batch over 100,000 bytes."""
    return "".join(f"INSERT INTO notes(body) VALUES ('{'ü€𝄞' * 40} {i}');\n" for i in range(rows_))


def test_a_batch_over_the_query_limit_goes_through_the_import_flow_all_or_nothing(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 3)
    assert migrate(proj)[0] == 0
    big = big_migration(400)
    assert len(big.encode()) > 100_000 > max(len(s.encode()) for s in big.splitlines())
    proj.write("migrations/0003_seed.sql", big)
    # tenant-001 holds a row 0003 cannot take (its last INSERT breaks a UNIQUE index made there by a migration).
    proj.write("migrations/0003_seed.sql", big + "INSERT INTO tags(name) VALUES ('taken');\n")
    api.server.execute(fleet["tenant-001"], "INSERT INTO tags(name) VALUES ('taken')")
    api.server.faults.add("drop-after-import")  # the first import's answer is lost after it ran: read back

    code, doc = migrate(proj, "--keep-going", "--concurrency", "1")
    assert code == 1
    by_name = {d["name"]: d for d in doc["databases"]}
    assert by_name["tenant-000"]["result"] == "applied"  # its answer was lost; the state read back says applied
    assert by_name["tenant-002"]["result"] == "applied" and by_name["tenant-002"]["sent_by"] == "import"
    failed = by_name["tenant-001"]
    assert failed["result"] == "failed" and "UNIQUE constraint failed: tags.name" in failed["error"]
    assert "Nothing was applied to tenant-001" in failed["error"]
    for name in ("tenant-000", "tenant-002"):
        uuid = fleet[name]
        assert recorded(api, uuid) == [("0001_notes.sql", 1), ("0002_tags.sql", 1), ("0003_seed.sql", 1)]
        assert rows(api, uuid, "SELECT count(*) AS n FROM notes") == [{"n": 400}]
        assert rows(api, uuid, "SELECT count(*) AS n FROM d1ops_lock") == [{"n": 0}]
    uuid = fleet["tenant-001"]
    assert rows(api, uuid, "SELECT count(*) AS n FROM notes") == [{"n": 0}]  # all or nothing
    assert [n for n, _ in recorded(api, uuid)] == ["0001_notes.sql", "0002_tags.sql"]
    assert rows(api, uuid, "SELECT count(*) AS n FROM d1ops_lock") == [{"n": 0}]
    imports = [r for r in api.server.requests if r["path"].endswith("/import")]
    actions = [r["json"]["action"] for r in imports if r["path"].split("/")[-2] == fleet["tenant-002"]]
    assert actions == ["init", "ingest", "poll"]  # and one PUT to the upload URL between init and ingest
    uploads = [r for r in api.server.requests if r["path"].startswith("/upload/")]
    assert len(uploads) == 3 and not any(r["authorized"] for r in uploads)  # the token goes to the API only


SEARCH = """\
    CREATE VIRTUAL TABLE notes_fts USING fts5(body, content='notes', content_rowid='id');
    CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN
      INSERT INTO notes_fts(rowid, body) VALUES (new.id, new.body);
    END;
    CREATE INDEX notes_tagged ON notes(tag_id) WHERE tag_id IS NOT NULL;
    CREATE VIEW tagged AS SELECT notes.id, tags.name FROM notes JOIN tags ON tags.id = notes.tag_id;
    CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL);
    """


def test_backup_takes_a_verified_backup_of_each_database_before_its_apply_and_a_failed_one_touches_nothing(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 3)
    assert migrate(proj)[0] == 0
    for i, uuid in enumerate(fleet.values()):
        api.server.execute(uuid, "INSERT INTO tags(name) VALUES ('naïve'), ('東京')")
        values = ", ".join(f"('note {n} of {i}: ü€ 🦀', {1 + n % 2})" for n in range(10 + i))
        api.server.execute(uuid, f"INSERT INTO notes(body, tag_id) VALUES {values}")
    proj.write("migrations/0003_search.sql", SEARCH)
    api.server.faults.add("export-error")  # the first database's export fails

    code, doc = migrate(proj, "--backup", "--keep-going", "--concurrency", "1")
    assert code == 1
    first, *others = doc["databases"]
    assert first["name"] == "tenant-000" and first["result"] == "failed" and first["backup"] is None
    assert "backup before the apply failed" in first["error"] and "the export could not be completed" in first["error"]
    assert "Nothing was applied to tenant-000" in first["error"]
    assert [n for n, _ in recorded(api, fleet["tenant-000"])] == ["0001_notes.sql", "0002_tags.sql"]
    assert rows(api, fleet["tenant-000"], "SELECT count(*) AS n FROM d1ops_lock") == [{"n": 0}]
    for i, d in enumerate(others, 1):
        assert d["result"] == "applied" and d["backup"]["verified"] is True, d
        assert d["backup"]["tables"]["notes"] == 10 + i and d["backup"]["tables"]["tags"] == 2
        manifest = json.loads((Path(d["backup"]["path"]) / "manifest.json").read_text())
        assert manifest["database_name"] == d["name"] and manifest["database_id"] == fleet[d["name"]]
        assert manifest["bookmark"] == d["bookmark"] and manifest["migration_head"] == "0002_tags.sql"
        assert manifest["exported_through"] == "d1-api" and manifest["whole_database"] is True
        assert Path(d["backup"]["path"]).parent == proj.root / "backups" / "tenants"
    # Per database: lease+read, bookmark, 3 for the export (start, poll, download), the batch. tenant-000: lease,
    # bookmark, the export's 2 calls, release.
    assert doc["summary"]["api_calls"] == 1 + 6 * 2 + 5

    downloads = [r for r in api.server.requests if r["path"].startswith("/download/")]
    assert len(downloads) == 2 and not any(r["authorized"] for r in downloads)  # the token goes to the API only
    assert all(r["authorized"] for r in api.server.requests if r["path"].startswith("/client/v4/"))

    listed = json.loads(proj.run("backups", "list", "tenants", "--json").stdout)
    assert sorted(b["label"] for b in listed) == ["migrate-tenant-001", "migrate-tenant-002"]
    verified = proj.run("backups", "verify", listed[0]["name"])
    assert verified.exit_code == 0, verified.output

    # A database with FTS5 (D1 refuses to export it whole): exported table by table, completed from its schema.
    proj.write("migrations/0004_more.sql", "INSERT INTO events(what) VALUES ('migrated ✓');\n")
    code, doc = migrate(proj, "--backup", "--only", "tenant-001")
    assert code == 0, doc
    (d,) = doc["databases"]
    manifest = json.loads((Path(d["backup"]["path"]) / "manifest.json").read_text())
    assert manifest["verified"] and [v["name"] for v in manifest["virtual_tables"]] == ["notes_fts"]
    assert (
        manifest["tables"]
        and {"notes": 11, "tags": 2, "events": 0}.items() <= {t["name"]: t["rows"] for t in manifest["tables"]}.items()
    )
    ddl = "\n".join(manifest["schema"])
    assert all(s in ddl for s in ("CREATE TRIGGER notes_ai", "CREATE VIEW tagged", "WHERE tag_id IS NOT NULL"))
    assert "notes_fts" in (Path(d["backup"]["path"]) / "dump.sql").read_text()

    # A fleet's backup is not restored into the fleet (a restore is one database's): the refusal says how.
    refused = proj.run("restore", listed[0]["name"], "--env", "tenants", "--yes")
    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    assert f"Backup {listed[0]['name']} is of {listed[0]['label'].removeprefix('migrate-')}" in said
    assert "wrangler d1 time-travel restore tenant-00" in said and "--from-other-env" in said
    other = proj.run("rollback", "tenants", "--yes")
    assert other.exit_code == 2 and "tenants is a fleet (many databases)" in other.output

    # Pruning keeps the newest of each database of the fleet, not the newest of the fleet's folder.
    pruned = proj.run("backups", "prune", "tenants", "--keep", "1")
    assert pruned.exit_code == 0 and "Deleted 1 backup(s)" in pruned.output, pruned.output
    left = json.loads(proj.run("backups", "list", "tenants", "--json").stdout)
    assert sorted(b["label"] for b in left) == ["migrate-tenant-001", "migrate-tenant-002"]
    assert d["backup"]["path"] in [b["path"] for b in left]  # tenant-001's newest


def test_a_fleet_backup_restores_into_its_database_through_an_environment_of_its_own(
    api: CloudflareAPI, tmp_path: Path
) -> None:
    """The route the refusal names: an environment for the one database, then d1ops's own restore (wrangler)."""
    proj = fleet_project(tmp_path / "project")
    fleet = make_fleet(api, 2)
    assert migrate(proj)[0] == 0
    uuid = fleet["tenant-001"]
    api.server.execute(uuid, "INSERT INTO notes(body) VALUES ('Grüße aus Köln 🍺'), ('안녕하세요'), ('plain')")
    api.server.execute(fleet["tenant-000"], "INSERT INTO notes(body) VALUES ('only here')")
    proj.write("migrations/0003_pins.sql", "ALTER TABLE notes ADD COLUMN pinned INTEGER;\n")
    code, doc = migrate(proj, "--backup")
    assert code == 0, doc
    backup = Path(next(d for d in doc["databases"] if d["name"] == "tenant-001")["backup"]["path"])
    api.server.execute(uuid, "DELETE FROM notes")  # the loss the backup is for

    proj.write(
        "wrangler.toml",
        'name = "fleet-test"\ncompatibility_date = "2025-01-01"\n\n'
        f'[[d1_databases]]\nbinding = "TENANT"\ndatabase_name = "tenant-001"\ndatabase_id = "{uuid}"\n',
    )
    proj.write(
        "environments.yaml",
        FLEET_ONLY + "  - name: tenant-001\n    target: remote\n    database: TENANT\n    backup: skip\n",
    )
    result = proj.run("restore", backup.name, "--env", "tenant-001", "--from-other-env", "--yes", "--json")
    assert result.exit_code == 0, result.output
    bodies = rows(api, uuid, "SELECT body FROM notes ORDER BY id")
    assert [r["body"] for r in bodies] == ["Grüße aus Köln 🍺", "안녕하세요", "plain"]
    assert "pinned" not in [c["name"] for c in rows(api, uuid, "SELECT name FROM pragma_table_info('notes')")]
    other = rows(api, fleet["tenant-000"], "SELECT body, pinned FROM notes")
    assert other == [{"body": "only here", "pinned": None}]  # the other database untouched (0003 applied there)
