"""What `d1ops --version` says: d1ops's version and the wrangler it drives (read from wrangler's
package.json, so no process is started)."""

from __future__ import annotations

from pathlib import Path

from d1ops import __version__
from d1ops.errors import D1OpsError


def version_line(cwd: Path) -> str:
    from d1ops.wrangler import Wrangler, find_wrangler

    try:
        binary = find_wrangler(cwd)
        version = Wrangler(cwd, cwd / "wrangler.toml", binary=binary).version()
        return f"d1ops {__version__}, wrangler {version} ({binary})"
    except D1OpsError as exc:
        return f"d1ops {__version__}, wrangler not found: {exc.message}"
