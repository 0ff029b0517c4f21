"""d1ops benchmark: wall time, wrangler processes and d1ops's own peak memory, printed as a table.

    make bench            (or: .venv/bin/python bench/benchmark.py [--rows 1000000] [--only NAME])

Runs the real wrangler against local D1 databases in a temporary project. The cost model is the number of
wrangler processes (~1 s each); d1ops's own peak RSS is measured in a child process that runs only d1ops
(wrangler's memory is its own and not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d1ops.sql.rowguard import row_guard  # noqa: E402
from d1ops.sql.schema import read_schema_sqlite  # noqa: E402
from tests.conftest import THREE_LOCAL_ENVIRONMENTS, THREE_LOCAL_WRANGLER, Proj  # noqa: E402

WRANGLER = REPO / "node_modules" / ".bin" / "wrangler"
QUIET = {"WRANGLER_SEND_METRICS": "false", "WRANGLER_HIDE_BANNER": "true", "CI": "true", "NO_COLOR": "1"}

# Runs d1ops in this process, then prints this process's own peak RSS (KiB on Linux) as the last line.
SELF_RSS = """
import resource, sys
from d1ops.cli import cli
try:
    cli(sys.argv[1:], prog_name="d1ops", standalone_mode=False)
except SystemExit:
    pass
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def env() -> dict[str, str]:
    return {**os.environ, **QUIET, "D1OPS_WRANGLER": str(WRANGLER)}


def wrangler(root: Path, *args: str) -> None:
    subprocess.run(
        [str(WRANGLER), *args], cwd=root, env=env(), check=True, capture_output=True, stdin=subprocess.DEVNULL
    )


def d1ops(root: Path, *args: str) -> tuple[float, int, str]:
    """Run d1ops in a child process; returns (seconds, peak RSS of that process in MB, stdout)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SELF_RSS, "--config", str(root / "environments.yaml"), *args],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0 or "PEAK_RSS_KB" not in proc.stderr:
        raise SystemExit(f"d1ops {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    rss_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return seconds, rss_kb // 1024, proc.stdout


def processes(stdout: str) -> str:
    try:
        return str(json.loads(stdout)["wrangler_processes"])
    except (ValueError, KeyError, TypeError):
        return "?"


def project(tmp: Path, name: str) -> Path:
    root = tmp / name
    root.mkdir()
    (root / "wrangler.toml").write_text(THREE_LOCAL_WRANGLER)
    (root / "environments.yaml").write_text(THREE_LOCAL_ENVIRONMENTS.replace("    backup: skip\n", ""))
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("down"))
    return root


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def bench_status_all(tmp: Path, rows: list[list[str]]) -> None:
    root = project(tmp, "status")
    d1ops(root, "migrate", "dev")
    d1ops(root, "promote", "--to", "staging")
    d1ops(root, "promote", "--to", "production", "--yes")
    select_1 = ("d1", "execute", "DB", "--local", "--json", "--command", "SELECT 1")
    one = timed(lambda: wrangler(root, *select_1))
    three = timed(lambda: [wrangler(root, *select_1, *e) for e in ([], ["--env", "staging"], ["--env", "production"])])
    seconds, rss, out = d1ops(root, "status", "--all", "--json")
    for _ in range(2):  # the best of three, taken in turns (a busy machine slows both alike)
        one = min(one, timed(lambda: wrangler(root, *select_1)))
        seconds = min(seconds, d1ops(root, "status", "--all", "--json")[0])
    rows.append(["one wrangler execute (reference)", f"{one:.2f}", "1", "-", "1.00x"])
    rows.append(["three wrangler executes in a row (reference)", f"{three:.2f}", "3", "-", f"{three / one:.2f}x"])
    rows.append(
        ["d1ops status --all (3 envs, concurrent; target ≤ 1.8x one call)", f"{seconds:.2f}", processes(out),
         str(rss), f"{seconds / one:.2f}x one call"]
    )  # fmt: skip
    seconds, rss, out = d1ops(root, "status", "--json")
    rows.append(["d1ops status (1 env)", f"{seconds:.2f}", processes(out), str(rss), "-"])


def bench_startup(rows: list[list[str]], runs: int = 15) -> None:
    """d1ops --help, --version and a completion against a bare `python -c pass`: the best of `runs`, in turns."""
    script = Path(sys.executable).parent / "d1ops"
    d1ops_argv = [str(script)] if script.exists() else [sys.executable, "-m", "d1ops"]
    complete = {"_D1OPS_COMPLETE": "bash_complete", "COMP_WORDS": "d1ops migrate ", "COMP_CWORD": "2"}
    cases = {
        "python -c pass (reference)": ([sys.executable, "-c", "pass"], {}),
        "d1ops --help": ([*d1ops_argv, "--help"], {}),
        "d1ops --version": ([*d1ops_argv, "--version"], {}),
        "d1ops completion of `d1ops migrate <TAB>`": (d1ops_argv, complete),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(runs):
        for name, (argv, extra) in cases.items():
            seconds = timed(lambda: subprocess.run(argv, cwd=REPO, env={**env(), **extra}, capture_output=True))  # noqa: B023
            best[name] = min(best[name], seconds)
    base = best["python -c pass (reference)"]
    for name, seconds in best.items():
        over = "-" if name.startswith("python") else f"+{seconds - base:.3f} s over python (target ≤ 0.10)"
        rows.append([f"start-up, {name}", f"{seconds:.3f}", "0", "-", over])


def bench_migrate(tmp: Path, rows: list[list[str]], count: int = 50) -> None:
    for holding in (False, True):
        suffix = "-holding" if holding else ""
        ours, theirs = project(tmp, f"many{suffix}"), project(tmp, f"many-wrangler{suffix}")
        for root in (ours, theirs):
            for path in (root / "migrations").glob("*.sql"):
                path.unlink()
            if holding:  # a table with rows: d1ops takes (and verifies) a real backup before applying
                wrangler(
                    root, "d1", "execute", "DB", "--local", "--command",
                    "CREATE TABLE data (id INTEGER PRIMARY KEY, v TEXT); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
                    "SELECT i + 1 FROM c WHERE i < 10000) INSERT INTO data SELECT i, 'value ' || i FROM c",
                )  # fmt: skip
            for i in range(1, count + 1):
                (root / "migrations" / f"{i:04d}_t{i}.sql").write_text(
                    f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);\n"
                )
        seconds, rss, out = d1ops(ours, "migrate", "dev", "--json")
        t = timed(lambda root=theirs: wrangler(root, "d1", "migrations", "apply", "DB", "--local"))  # type: ignore[misc]
        if holding:
            backup = json.loads(out).get("backup") or {}
            assert backup.get("verified"), out
            what = f"d1ops migrate: {count} migrations on a database holding a table (10,000 rows), verified backup"
            rows.append([what, f"{seconds:.2f}", processes(out), str(rss), f"{seconds / t:.2f}x wrangler apply"])
            rows.append([f"wrangler d1 migrations apply: {count} migrations, same database", f"{t:.2f}",
                         str(count + 2), "-", "reference"])  # fmt: skip
        else:
            rows.append([f"d1ops migrate: {count} migrations, one batch (empty database: no backup)",
                         f"{seconds:.2f}", processes(out), str(rss), f"{seconds / t:.2f}x wrangler apply"])  # fmt: skip
            rows.append([f"wrangler d1 migrations apply: {count} migrations", f"{t:.2f}", str(count + 2), "-",
                         "reference"])  # fmt: skip
            seconds, rss, out = d1ops(ours, "migrate", "dev", "--json")
            rows.append(["d1ops migrate: nothing to apply", f"{seconds:.2f}", processes(out), str(rss), "-"])


def bench_backup(tmp: Path, rows: list[list[str]], count: int) -> None:
    root = project(tmp, "big")
    d1ops(root, "migrate", "dev")
    wrangler(
        root, "d1", "execute", "DB", "--local", "--json", "--command",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT, score REAL); "
        f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {count}) "
        "INSERT INTO big SELECT i, 'row number ' || i, i * 0.5 FROM c",
    )  # fmt: skip
    export = ["d1", "export", "DB", "--local", "--table", "big", "--output", str(tmp / "bare.sql")]
    first = timed(lambda: wrangler(root, *export))
    runs = {level: d1ops(root, "backup", "big", "--verify", level, "--json") for level in ("quick", "full")}
    last = timed(lambda: wrangler(root, *export))  # before and after: the reference is their mean
    bare = (first + last) / 2
    what = f"wrangler d1 export --table big ({count:,} rows, reference: mean of {first:.2f} before, {last:.2f} after)"
    rows.append([what, f"{bare:.2f}", "1", "-", "1.00x"])
    for level, target in (("quick", "target <= 1.5x"), ("full", "target <= 3x")):
        seconds, rss, out = runs[level]
        summary = json.loads(out)
        assert summary["verified"] and summary["tables"]["big"] == count, summary
        size = summary["files"][0]["size"] // (1 << 20)
        what = f"d1ops backup big ({count:,} rows, {size} MiB), verify {level}"
        ratio = f"{seconds / bare:.2f}x export ({target})"
        rows.append([what, f"{seconds:.2f}", processes(out), str(rss), ratio])
    seconds, rss, out = d1ops(root, "backup", "big", "--format", "json", "--json")
    rows.append([f"d1ops backup big --format json ({count:,} rows)", f"{seconds:.2f}", processes(out), str(rss),
                 f"{seconds / bare:.2f}x export"])  # fmt: skip


def bench_rowguard(tmp: Path, rows: list[list[str]], count: int, runs: int = 7) -> None:
    """`d1ops migrate dev` of one cheap migration on a database of `count` rows (accounts; members, ON DELETE
    CASCADE; notes, ON DELETE SET NULL: the guard counts every table and the notes' links), with `row_guard` on
    and off, taken in turns (best of `runs` each). No backup (backup: skip), so the batch is what is timed."""
    root = project(tmp, "rowguard")
    config = root / "environments.yaml"
    plain = THREE_LOCAL_ENVIRONMENTS
    off = plain.replace("    backup: skip\n", "    backup: skip\n    row_guard: false\n", 1)
    config.write_text(plain)
    accounts, children = count // 10, (count - count // 10) // 2
    (root / "migrations" / "0003_accounts.sql").write_text(  # the tables by a migration (not drift) ...
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
        "CREATE TABLE members (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL "
        "REFERENCES accounts(id) ON DELETE CASCADE, email TEXT);\n"
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(id) ON DELETE SET NULL, "
        "body TEXT);\n"
    )
    out = d1ops(root, "migrate", "dev", "--json")[2]
    assert json.loads(out)["exit_code"] == 0, out
    wrangler(  # ... their rows as an application writes them
        root, "d1", "execute", "DB", "--local", "--json", "--command",
        f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {accounts}) "
        "INSERT INTO accounts SELECT i, 'compte ' || i FROM c; "
        f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {children}) "
        f"INSERT INTO members SELECT i, 1 + i % {accounts}, 'm' || i || '@example.org' FROM c; "
        f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {children}) "
        f"INSERT INTO notes SELECT i, 1 + i % {accounts}, 'note ' || i FROM c",
    )  # fmt: skip
    best = {True: float("inf"), False: float("inf")}
    procs = dict.fromkeys(best, "?")
    for i in range(2 * runs):
        guard = i % 2 == 0
        config.write_text(plain if guard else off)
        (root / "migrations" / f"{i + 4:04d}_notes_c{i}.sql").write_text(f"ALTER TABLE notes ADD COLUMN c{i} TEXT;\n")
        seconds, _, out = d1ops(root, "migrate", "dev", "--json")
        assert [m["result"] for m in json.loads(out)["migrations"]] == ["applied"], out
        best[guard], procs[guard] = min(best[guard], seconds), processes(out)
    total = accounts + 2 * children
    ratio = best[True] / best[False]
    for guard in (False, True):
        what = f"d1ops migrate: 1 migration, {total:,} rows in 3 tables (FKs), row_guard {'on' if guard else 'off'}"
        cost = f"{ratio:.3f}x off (guard {100 * (ratio - 1):+.1f} %, target <= +5 %)" if guard else "reference"
        rows.append([what, f"{best[guard]:.2f}", procs[guard], "-", cost])
    # The guard's own statements on the same database, without wrangler's start-up around them: what the guard
    # costs inside the batch, steadier than the difference of two process timings on a shared machine.
    copy = tmp / "rowguard.sqlite"
    source = sqlite3.connect(f"file:{Proj(root).sqlite_path('dev')}?mode=ro", uri=True)
    conn = sqlite3.connect(copy, isolation_level=None)
    source.backup(conn)
    source.close()
    guard_sql = row_guard(read_schema_sqlite(conn), [("next.sql", "ALTER TABLE notes ADD COLUMN z TEXT;")])
    held = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("accounts", "members", "notes"))
    assert held == accounts + 2 * children, held
    alone = float("inf")
    for _ in range(5):
        alone = min(
            alone, timed(lambda: conn.executescript(f"BEGIN;\n{guard_sql.start_sql}{guard_sql.end_sql}ROLLBACK;"))
        )
    conn.close()
    share = 100 * alone / best[True]
    rows.append([f"the row guard's statements alone ({len(guard_sql.guarded)} counts, twice; sqlite3, same database)",
                 f"{alone:.3f}", "0", "-", f"{share:.1f} % of migrate (target <= 5 %)"])  # fmt: skip


def bench_fleet(tmp: Path, rows: list[list[str]], count: int = 1000, loop: int = 20) -> None:
    """A fleet of `count` databases on the loopback API emulator (its own process), one migration pending on each:
    d1ops's wall time, API calls per database and peak RSS; beside it, a shell loop of `wrangler d1 migrations
    apply --remote` over `loop` other databases, and the ratio per database."""
    from d1ops.api.client import D1Api
    from tests.cloudflare.fixture import wrangler_env

    token, account = "bench-token", "0" * 32
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.cloudflare.server", "--port", "0", "--token", token, "--account", account,
         "--data", str(tmp / "fleet-d1")],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base_url = (server.stdout.readline() if server.stdout else "").strip().split("=", 1)[1]
        api_env = wrangler_env(base_url, token, account)
        os.environ.update(api_env)
        api = D1Api(base_url, token, account)
        for i in range(count):
            api.call("POST", "/d1/database", {"name": f"tenant-{i:04d}"})
        root = tmp / "fleet"
        (root / "migrations").mkdir(parents=True)
        (root / "migrations" / "0001_notes.sql").write_text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n")
        (root / "environments.yaml").write_text(
            'database: DB\nenvironments:\n  - name: tenants\n    target: remote\n    fleet: "tenant-*"\n'
        )
        loop_names = [f"loop-{i:02d}" for i in range(loop)]
        entries = ""
        for name in loop_names:
            uuid = api.call("POST", "/d1/database", {"name": name})["result"]["uuid"]
            entries += f'[[d1_databases]]\nbinding = "{name}"\ndatabase_name = "{name}"\ndatabase_id = "{uuid}"\n\n'
        (root / "wrangler.toml").write_text(f'name = "bench-fleet"\ncompatibility_date = "2025-01-01"\n\n{entries}')
        seconds, rss, out = d1ops(root, "migrate", "tenants", "--json")
        summary = json.loads(out)["summary"]
        assert summary["applied"] == count, summary
        per_db = summary["api_calls_per_database"]
        # The same fleet with --backup: each database exported through the API and kept as a verified backup.
        (root / "migrations" / "0002_tags.sql").write_text("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n")
        b_seconds, b_rss, b_out = d1ops(root, "migrate", "tenants", "--backup", "--json")
        b_summary = json.loads(b_out)["summary"]
        assert b_summary["applied"] == count, b_summary
        start = time.monotonic()
        script = (
            f'for db in {" ".join(loop_names)}; do "{WRANGLER}" d1 migrations apply "$db" --remote >/dev/null; done'
        )
        subprocess.run(["sh", "-c", script], cwd=root, env={**env(), **api_env}, check=True, stdin=subprocess.DEVNULL)
        loop_s = time.monotonic() - start
        ratio = (seconds / count) / (loop_s / loop)
        rows.append([f"d1ops migrate fleet of {count:,} (1 migration each; {per_db} API calls/db)", f"{seconds:.2f}",
                     "0", str(rss), f"{ratio:.4f}x wrangler loop per db (target 0.05x)"])  # fmt: skip
        rows.append([f"d1ops migrate fleet of {count:,} --backup ({b_summary['api_calls_per_database']} API calls/db)",
                     f"{b_seconds:.2f}", "0", str(b_rss), f"{b_seconds / count * 1000:.1f} ms per db"])  # fmt: skip
        rows.append([f"sh loop: wrangler d1 migrations apply --remote x {loop}", f"{loop_s:.2f}", str(loop), "-",
                     f"{loop_s / loop:.2f} s per db"])  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the backup and row guard benchmarks")
    benchmarks = ["startup", "status", "migrate", "backup", "rowguard", "fleet"]
    parser.add_argument("--only", choices=benchmarks, help="run one benchmark")
    args = parser.parse_args()
    if not WRANGLER.exists():
        raise SystemExit("wrangler is not installed: run `make install` first")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="d1ops-bench-") as tmp:
        if args.only in (None, "startup"):
            bench_startup(rows)
        if args.only in (None, "status"):
            bench_status_all(Path(tmp), rows)
        if args.only in (None, "migrate"):
            bench_migrate(Path(tmp), rows)
        if args.only in (None, "backup"):
            bench_backup(Path(tmp), rows, args.rows)
        if args.only in (None, "rowguard"):
            bench_rowguard(Path(tmp), rows, args.rows)
        if args.only in (None, "fleet"):
            bench_fleet(Path(tmp), rows)
    headers = ["what", "seconds", "wrangler processes", "d1ops peak RSS (MB)", "ratio"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"d1ops benchmark on {os.cpu_count()} cores")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
