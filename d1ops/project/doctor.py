"""`d1ops doctor`: one line per check, ok / warn / fail, each with the fix. Credentials are named, never shown."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from d1ops.errors import D1OpsError
from d1ops.project.config import Config, find_config_path, load_configs
from d1ops.project.credentials import credentials_source
from d1ops.project.init import git_ignores
from d1ops.project.migrations import discover_migrations
from d1ops.run.tracking import read_state
from d1ops.support.files import private_parents
from d1ops.wrangler.config import PLACEHOLDER_ID
from d1ops.wrangler.locate import ENV_VAR, INSTALL_HINT, Found, locate, node_requirement
from d1ops.wrangler.runner import Runner, Wrangler

OK, WARN, FAIL = "ok", "warn", "fail"
LOCAL_STATE = Path(".wrangler") / "state" / "v3" / "d1"
NODE_MAJOR = 20


@dataclass
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    checks: list[Check]
    wrangler_processes: int = 0

    @property
    def failed(self) -> bool:
        return any(c.level == FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        checks = [asdict(c) for c in self.checks]
        return {"checks": checks, "failed": self.failed, "wrangler_processes": self.wrangler_processes}


def run_doctor(config_path: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> DoctorReport:
    root = cwd or Path.cwd()
    checks: list[Check] = []
    try:
        configs = load_configs(config_path, cwd)
    except D1OpsError as exc:
        try:
            find_config_path(config_path, cwd)
            fix = "fix what it names, then run `d1ops doctor` again"
        except D1OpsError:
            fix = "run `d1ops init` (it writes environments.yaml from the wrangler config)"
        checks.append(Check("config", FAIL, exc.message, fix))
        configs = []
    root = configs[0].root if configs else root
    wrangler = _check_wrangler(root, configs, checks)
    if not configs:
        return DoctorReport(checks)
    databases = ", ".join(c.database for c in configs)
    checks.append(
        Check(
            "config",
            OK,
            f"{configs[0].path.name}: {len(configs)} database(s) ({databases}), "
            f"environments {' → '.join(configs[0].env_names)}",
        )
    )
    for config in configs:
        _check_bindings(config, checks)
        _check_migrations(config, checks)
    _check_backups_dir(configs[0], checks)
    _check_credentials(configs, wrangler, checks)
    _check_local_state(configs[0], checks)
    if wrangler is not None:
        _check_leases(configs, wrangler, checks)
    return DoctorReport(checks, wrangler.processes if wrangler else 0)


def _check_wrangler(root: Path, configs: list[Config], checks: list[Check]) -> Wrangler | None:
    from d1ops.project.about import range_warning

    wrangler = None
    found = locate(root)
    if found.binary is None:
        checks.append(Check("wrangler", FAIL, f"not found; looked at {_looked(found, root)}", _INSTALL_FIX))
    else:
        try:
            wrangler = Wrangler(
                root, configs[0].wrangler_config if configs else root / "wrangler.toml", binary=found.binary
            )
            version = wrangler.check_version()
            where = {"node_modules": "", "PATH": ", from PATH", ENV_VAR: f", from ${ENV_VAR}"}[found.how]
            detail = f"wrangler {version} ({_shown_path(found.binary, root)}{where})"
            warning = range_warning(version)
            if warning:
                checks.append(Check("wrangler", WARN, f"{detail}: {warning.split('; ')[0]}", warning.split("; ")[-1]))
            else:
                checks.append(Check("wrangler", OK, detail))
        except D1OpsError as exc:
            checks.append(Check("wrangler", FAIL, exc.message, _INSTALL_FIX))
            wrangler = None
    _check_node(root, found.binary, checks)
    return wrangler


_INSTALL_FIX = (
    f"`{INSTALL_HINT}` in the Worker's folder (or a monorepo's workspace root), or set {ENV_VAR} to a wrangler"
)


def _looked(found: Found, root: Path) -> str:
    """Where locate looked, short: paths from the Worker's folder, the repository root named."""
    shown = []
    for place in found.looked:
        if not place.startswith(os.sep):
            shown.append(place)
            continue
        here = _shown_path(place, root)
        if found.repository is not None and Path(place).parent.parent.parent == found.repository:
            here += " (the repository root)"
        shown.append(here)
    return ", ".join(shown)


def _shown_path(binary: str, root: Path) -> str:
    """The path as the user would type it from the Worker's folder (./node_modules/…, ../../node_modules/…)."""
    try:
        relative = os.path.relpath(binary, root)
    except ValueError:
        return binary
    if relative.startswith(".." + os.sep + ".." + os.sep + ".." + os.sep + ".."):
        return binary
    return relative if relative.startswith("..") else f".{os.sep}{relative}"


def _check_node(root: Path, binary: str | None, checks: list[Check]) -> None:
    """The `node` on PATH (the one wrangler's `#!/usr/bin/env node` runs) against what this wrangler asks for in
    its package.json (`engines.node`, e.g. ">=22.12.0" for 4.164.0; ">=20.3.0" for 4.86.0; never below Node 20)."""
    wanted = (node_requirement(binary) if binary else None) or ""
    match = re.fullmatch(r"\s*>=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*", wanted)
    minimum = tuple(int(p or 0) for p in match.groups()) if match else (0, 0, 0)
    minimum = max(minimum, (NODE_MAJOR, 0, 0))
    shown = ".".join(str(p) for p in minimum)
    fix = f"install Node.js {shown} or newer, first on PATH"
    node = node_version(root)
    if node is None:
        checks.append(Check("node", FAIL, "node not found on PATH", fix))
        return
    have = tuple(int(p) for p in node.split("."))
    if have < minimum:
        asked = f"wrangler asks for node {wanted.strip()}" if match and minimum[0] > NODE_MAJOR else "d1ops needs"
        checks.append(Check("node", FAIL, f"node {node} is older than {shown} ({asked})", fix))
    else:
        checks.append(Check("node", OK, f"node {node}"))


def node_version(root: Path) -> str | None:
    """The version of the `node` on PATH (the one wrangler's `#!/usr/bin/env node` runs), through the one seam."""
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = Runner(root, root / "wrangler.toml", binary=node).run(["--version"], timeout=30)
    except D1OpsError:
        return None
    match = re.search(r"(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


def _check_bindings(config: Config, checks: list[Check]) -> None:
    for env in config.environments:
        b = env.binding
        name = f"binding {config.database}/{env.name}" if config.several else f"binding {env.name}"
        where = f"[env.{env.wrangler_env}]" if env.wrangler_env else "top level"
        detail = f"{b.binding} → {b.database_name or '(no database_name)'} ({where}, {env.target})"
        if env.is_remote and (b.database_id is None or PLACEHOLDER_ID.match(b.database_id)):
            checks.append(
                Check(
                    name,
                    WARN,
                    f"{detail}: placeholder database_id {b.database_id or '(none)'}",
                    f"`d1ops create {env.name} --write-config`, or copy the id from `wrangler d1 list`",
                )
            )
        else:
            checks.append(Check(name, OK, detail))


def _check_migrations(config: Config, checks: list[Check]) -> None:
    name = f"migrations {config.database}" if config.several else "migrations"
    try:
        found = discover_migrations(config.migrations_dir, config.baseline)
    except D1OpsError as exc:
        checks.append(Check(name, FAIL, exc.message, "fix the folder or environments.yaml"))
        return
    summary = f"{len(found.files)} file(s) in {_shown(config, config.migrations_dir)}/"
    if found.errors:
        first = found.errors[0]
        checks.append(
            Check(
                name,
                FAIL,
                f"{summary}, {len(found.errors)} error(s): {first.file}: {first.message}",
                "`d1ops lint` lists them all",
            )
        )
    elif found.warnings:
        checks.append(Check(name, WARN, f"{summary}, {len(found.warnings)} warning(s)", "`d1ops lint` lists them"))
    else:
        checks.append(Check(name, OK, summary))


def _check_backups_dir(config: Config, checks: list[Check]) -> None:
    folder = config.backups_dir
    try:
        private_parents(folder)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        checks.append(
            Check(
                "backups dir",
                FAIL,
                f"{folder} is not writable ({exc.strerror or exc})",
                "fix its permissions or set backups_dir",
            )
        )
        return
    rel = os.path.relpath(folder, config.root)
    if rel.startswith("..") or git_ignores(config.root, rel):
        checks.append(Check("backups dir", OK, f"{rel}/ writable, git-ignored"))
    else:
        checks.append(
            Check(
                "backups dir",
                WARN,
                f"{rel}/ is not in .gitignore: backups hold real rows",
                f"add `{rel}/` to .gitignore (`d1ops init` does)",
            )
        )


def _check_credentials(configs: list[Config], wrangler: Wrangler | None, checks: list[Check]) -> None:
    remote = [e for c in configs for e in c.environments if e.is_remote]
    if not remote:
        checks.append(Check("credentials", OK, "no remote environment: none needed"))
        return
    source = credentials_source()
    if source is None:
        names = ", ".join(dict.fromkeys(e.name for e in remote))
        checks.append(
            Check(
                "credentials",
                WARN,
                f"no credentials: {names} cannot be reached from here",
                "set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID, or run `wrangler login`",
            )
        )
        return
    if wrangler is None:
        checks.append(Check("credentials", WARN, f"present ({source}), not tried: wrangler is missing"))
        return
    env = remote[0]
    try:
        wrangler.info(env)
    except D1OpsError as exc:
        checks.append(
            Check(
                "credentials",
                FAIL,
                f"present ({source}) but `d1 info` of {env.name} failed: {exc.message.splitlines()[0]}",
                "check the token's D1 permission and the database_id",
            )
        )
        return
    checks.append(Check("credentials", OK, f"present ({source}), accepted (d1 info of {env.name})"))


def local_state(config: Config) -> Path:
    """Where wrangler keeps the local D1s: beside the wrangler config (not environments.yaml), whatever the cwd."""
    return config.wrangler_config.parent / LOCAL_STATE


def _shown(config: Config, path: Path) -> str:
    """A folder as the user finds it: relative to the project root (environments.yaml's folder) when inside."""
    rel = os.path.relpath(path, config.root)
    return str(path) if rel.startswith("..") else rel


def _check_local_state(config: Config, checks: list[Check]) -> None:
    local = [e.name for e in config.environments if not e.is_remote]
    if not local:
        return
    state = local_state(config)
    if state.is_dir():
        checks.append(Check("local state", OK, f"{_shown(config, state)}/ present ({', '.join(local)})"))
    else:
        checks.append(
            Check(
                "local state",
                WARN,
                f"no {_shown(config, state)}/ yet: {', '.join(local)} not created",
                f"`d1ops migrate {local[0]}` creates it (or `d1ops adopt {local[0]} ...`)",
            )
        )


def _check_leases(configs: list[Config], wrangler: Wrangler, checks: list[Check]) -> None:
    """Locks left by runs that died: local environments always, remote ones when credentials are there."""
    reachable = credentials_source() is not None
    for config in configs:
        for env in config.environments:
            if env.is_remote and not reachable:
                continue
            if not env.is_remote and not local_state(config).is_dir():
                continue
            label = f"{config.database}/{env.name}" if config.several else env.name
            try:
                state = read_state(wrangler, env)
            except D1OpsError as exc:
                checks.append(Check(f"lock {label}", WARN, f"could not read: {exc.message.splitlines()[0]}"))
                continue
            if state.lock_owner:
                checks.append(
                    Check(
                        f"lock {label}",
                        WARN,
                        f"held by {state.lock_owner} since {state.lock_acquired_at}",
                        f"if that run is dead: `d1ops unlock {env.name}"
                        + (f" --db {config.database}`" if config.several else "`"),
                    )
                )
            else:
                checks.append(Check(f"lock {label}", OK, "no lock held"))
