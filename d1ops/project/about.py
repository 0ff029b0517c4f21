"""What `d1ops --version` says: d1ops's version and the wrangler it drives (read from wrangler's
package.json, so no process is started, and nothing but this and wrangler/locate.py is imported); and the
range of wrangler versions d1ops is tested with, which `--version` and `doctor` warn outside of."""

from __future__ import annotations

from pathlib import Path

from d1ops import __version__
from d1ops.errors import D1OpsError

# Both ends are run by the test suite: the oldest with Node 20 (`make test`, package.json), the newest with
# Node 22 (`make test-wrangler-latest`, tools/wrangler-latest/package.json). tests/test_install.py checks that
# these are the versions those two files pin.
TESTED_WRANGLER = ("4.86.0", "4.164.0")


def _parts(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in version.split("-")[0].split("."))
    except ValueError:
        return None


def range_warning(version: str) -> str | None:
    """None inside the tested range; else what is untested and what to install."""
    low, high = TESTED_WRANGLER
    got = _parts(version)
    if got is None:
        return f"wrangler {version} is not a version d1ops can compare: d1ops is tested with {low} to {high}"
    low_parts, high_parts = _parts(low) or (), _parts(high) or ()
    if low_parts <= got <= high_parts:
        return None
    side = "older" if got < low_parts else "newer"
    return (
        f"wrangler {version} is {side} than any d1ops is tested with ({low} to {high}); "
        f"d1ops reads wrangler's output, so pin a tested one: `npm install --save-dev wrangler@{high}`"
    )


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
    line = f"d1ops {__version__}, wrangler {version} ({binary})"
    warning = range_warning(version)
    return f"{line}\nwarning: {warning}." if warning else line
