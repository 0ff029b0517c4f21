"""Finding wrangler the way npm runs it, and reading its version without starting it (so `d1ops --version`
loads no process machinery; runner.py re-exports `find_wrangler`).

The order: $D1OPS_WRANGLER; then `node_modules/.bin/wrangler` in the Worker's folder and in each folder above
it up to the repository root (the first folder holding `.git`, else the filesystem root): npm and pnpm
workspaces hoist wrangler to the workspace root; then `wrangler` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1ops.errors import WranglerNotFound

ENV_VAR = "D1OPS_WRANGLER"
INSTALL_HINT = "npm install --save-dev wrangler"
BIN = Path("node_modules") / ".bin" / "wrangler"


@dataclass(frozen=True)
class Found:
    """Where wrangler was found (`binary`), and every place looked at before it, in order."""

    binary: str | None
    looked: tuple[str, ...]
    how: str = ""  # "D1OPS_WRANGLER", "node_modules" or "PATH"
    repository: Path | None = None  # the folder holding .git where the walk up stopped (None: at /)


def repository_root(start: Path) -> Path | None:
    """The first folder from `start` up that holds `.git` (a folder, or a file in a git worktree)."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def node_modules_candidates(start: Path) -> list[Path]:
    """`node_modules/.bin/wrangler` in `start` and each parent, up to the repository root (or /)."""
    start = start.resolve()
    top = repository_root(start)
    folders = [start, *start.parents]
    if top is not None:
        folders = folders[: folders.index(top) + 1]
    return [folder / BIN for folder in folders]


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate(root: Path) -> Found:
    """Look for wrangler as npm would run it; never raises."""
    looked: list[str] = []
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if _executable(Path(explicit)):
            return Found(explicit, (), ENV_VAR)
        # A variable set to a wrong path is a mistake to fix, not a reason to take another wrangler.
        return Found(None, (f"${ENV_VAR}={explicit} (not an executable file)",), ENV_VAR)
    else:
        looked.append(f"${ENV_VAR} (not set)")
    top = repository_root(root.resolve())
    for candidate in node_modules_candidates(root):
        if candidate.is_file():
            return Found(str(candidate), tuple(looked), "node_modules", top)
        looked.append(str(candidate))
    on_path = shutil.which("wrangler")
    if on_path:
        return Found(on_path, tuple(looked), "PATH", top)
    looked.append("wrangler on PATH")
    return Found(None, tuple(looked), "", top)


def not_found_message(found: Found) -> str:
    places = "\n".join(f"  {place}" for place in found.looked)
    return (
        f"wrangler not found. Looked at, in order:\n{places}\n"
        f"Install it in the Worker's project (or the workspace root of a monorepo): `{INSTALL_HINT}`; "
        f"or set {ENV_VAR} to the wrangler to use."
    )


def find_wrangler(root: Path) -> str:
    """The wrangler to run for the Worker in `root`; WranglerNotFound lists where it looked."""
    found = locate(root)
    if found.binary is None and found.how == ENV_VAR:
        raise WranglerNotFound(
            f"{ENV_VAR} points at {os.environ.get(ENV_VAR)}, which is not an executable file. "
            "Fix the variable, or unset it to use the project's node_modules/.bin/wrangler."
        )
    if found.binary is None:
        raise WranglerNotFound(not_found_message(found))
    return found.binary


def package_of(binary: str) -> dict[str, Any] | None:
    """The package.json of the wrangler package `binary` belongs to (None if it is not an npm install)."""
    try:
        real = Path(binary).resolve()
        for parent in real.parents:
            package = parent / "package.json"
            if package.is_file():
                data = json.loads(package.read_text(encoding="utf-8"))
                return data if isinstance(data, dict) and data.get("name") == "wrangler" else None
    except (OSError, ValueError):
        return None
    return None


def version_from_package(binary: str) -> str | None:
    """The version in the package.json of the wrangler package `binary` belongs to (None if not found)."""
    data = package_of(binary)
    version = data.get("version") if data else None
    return version if isinstance(version, str) else None


def node_requirement(binary: str) -> str | None:
    """wrangler's own `engines.node` (e.g. ">=22.12.0"), from its package.json."""
    data = package_of(binary)
    engines = data.get("engines") if data else None
    wanted = engines.get("node") if isinstance(engines, dict) else None
    return wanted if isinstance(wanted, str) else None
