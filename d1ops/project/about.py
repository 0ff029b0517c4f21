"""What `d1ops --version` says: d1ops's version and the wrangler it drives (read from wrangler's
package.json, so no process is started, and nothing but this and wrangler_locate.py is imported)."""

from __future__ import annotations

from pathlib import Path

from d1ops import __version__
from d1ops.errors import D1OpsError


def version_line(cwd: Path) -> str:
    from d1ops.wrangler.locate import find_wrangler, version_from_package

    try:
        binary = find_wrangler(cwd)
    except D1OpsError as exc:
        return f"d1ops {__version__}, wrangler not found: {exc.message}"
    version = version_from_package(binary)
    if version is None:  # not an npm install (a wrapper script?): only then ask it, starting a process
        from d1ops.wrangler.runner import Wrangler

        try:
            version = Wrangler(cwd, cwd / "wrangler.toml", binary=binary).version()
        except D1OpsError as exc:
            return f"d1ops {__version__}, wrangler at {binary} did not say its version: {exc.message}"
    return f"d1ops {__version__}, wrangler {version} ({binary})"
