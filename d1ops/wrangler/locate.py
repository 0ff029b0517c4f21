"""Finding wrangler and reading its version without starting it (so `d1ops --version` loads no process
machinery; wrangler.py re-exports `find_wrangler`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from d1ops.errors import WranglerNotFound


def find_wrangler(root: Path) -> str:
    """$D1OPS_WRANGLER, then ./node_modules/.bin/wrangler, then wrangler on PATH."""
    explicit = os.environ.get("D1OPS_WRANGLER")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise WranglerNotFound(
                f"D1OPS_WRANGLER points at {explicit}, which is not an executable file. "
                "Fix the variable, or unset it to use ./node_modules/.bin/wrangler."
            )
        return explicit
    local = root / "node_modules" / ".bin" / "wrangler"
    if local.is_file():
        return str(local)
    on_path = shutil.which("wrangler")
    if on_path:
        return on_path
    raise WranglerNotFound(
        "wrangler not found (looked at $D1OPS_WRANGLER, ./node_modules/.bin/wrangler and PATH). "
        "Install it with `npm ci` (or `make install`) in the project root."
    )


def version_from_package(binary: str) -> str | None:
    """The version in the package.json of the wrangler package `binary` belongs to (None if not found)."""
    try:
        real = Path(binary).resolve()
        for parent in real.parents:
            package = parent / "package.json"
            if package.is_file():
                data = json.loads(package.read_text(encoding="utf-8"))
                return data.get("version") if data.get("name") == "wrangler" else None
    except (OSError, ValueError):
        return None
    return None
