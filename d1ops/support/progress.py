"""What a person sees while d1ops works: a progress line on a terminal, `-v`'s wrangler calls, `-q`'s silence.

- `step("Backing up production")` names what d1ops is doing; while a step (or a wrangler call) runs, a line with
  the step, the running wrangler call and the elapsed time is redrawn in place on stderr, only when stderr is
  a terminal and neither `--quiet` nor `--json` is given. It is erased before anything else is printed.
- wrangler.py tells `wrangler_started` / `wrangler_finished` about every process; with `--verbose` each one is
  printed as a shell line (token-free) with its duration and exit code, so it can be run again by hand.
- `colour(stream)`: colour only on a terminal and never with NO_COLOR (https://no-color.org).

The CLI calls `configure` once per command; core modules only call `step`. No click here.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

TICK = 0.25  # seconds between redraws
SHOW_AFTER = 0.5  # a step that ends sooner never draws a line (no flicker on quick commands)


@dataclass
class Settings:
    quiet: bool = False
    verbose: bool = False
    json: bool = False


settings = Settings()
_lock = threading.RLock()
_step: tuple[str, float] | None = None  # (label, started at)
_held = False  # the step holds the line (step(..., since=...)) until finish()
_calls: dict[int, tuple[str, float]] = {}  # the running wrangler calls by thread: (short form, started at)
_drawn = False
_ticker: threading.Thread | None = None


def configure(*, quiet: bool | None = None, verbose: bool | None = None, json: bool | None = None) -> None:
    """Switch modes on (options given on the group and on the command add up)."""
    settings.quiet = settings.quiet or bool(quiet)
    settings.verbose = settings.verbose or bool(verbose)
    settings.json = settings.json or bool(json)


def reset() -> None:
    """Back to defaults (for each CLI invocation in one process, e.g. tests)."""
    global _step, _held
    clear()
    settings.quiet = settings.verbose = settings.json = False
    _step, _held = None, False
    _calls.clear()


def colour(stream: TextIO | None = None) -> bool:
    """Colour codes may be written to `stream` (default stderr): a terminal, NO_COLOR unset, TERM not dumb."""
    stream = stream or sys.stderr
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def line_enabled() -> bool:
    return not (settings.quiet or settings.json) and _isatty(sys.stderr) and os.environ.get("TERM") != "dumb"


def step(label: str, *, since: float | None = None) -> None:
    """Name the step d1ops is on now (shown by the progress line with its elapsed time). `since`: when the step
    began (time.monotonic()), for a label that keeps changing (a fleet's count going up); such a step holds the
    line until `finish()`: the steps of work under it (each database's backup) do not replace it."""
    global _step, _held
    with _lock:
        if _held and since is None:
            return
        _held = since is not None
        _step = (label, time.monotonic() if since is None else since)
    _ensure_ticker()


def finish() -> None:
    """The command is done: no step any more, the line erased."""
    global _step, _held
    with _lock:
        _step, _held = None, False
        _calls.clear()
        clear()


def wrangler_started(argv: list[str]) -> float:
    """A wrangler process starts (argv as errors show it: token-free); returns its start time."""
    started = time.monotonic()
    with _lock:
        _calls[threading.get_ident()] = (" ".join(argv[:3]), started)
    _ensure_ticker()
    return started


def wrangler_finished(argv: list[str], started: float, status: str) -> None:
    """The process ended; `status` says how ("exit 0", "exit 1", "timed out after 300 s", "killed by signal 9",
    "interrupted", "not started")."""
    with _lock:
        _calls.pop(threading.get_ident(), None)
        if settings.verbose and not settings.quiet:
            clear()
            sys.stderr.write(f"$ {shlex.join(argv)}  # {time.monotonic() - started:.2f} s, {status}\n")
            sys.stderr.flush()


def clear() -> None:
    """Erase the progress line (before anything else is written to the terminal)."""
    global _drawn
    with _lock:
        if _drawn:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            _drawn = False


def render(now: float | None = None) -> str | None:
    """The progress line's text now, or None when nothing has run long enough to show."""
    now = time.monotonic() if now is None else now
    with _lock:
        calls = sorted(_calls.values(), key=lambda c: c[1])
        starts = [item[1] for item in (_step, *calls) if item is not None]
        if not starts or now - min(starts) < SHOW_AFTER:
            return None
        parts = [_step[0]] if _step else []
        if calls:  # several side by side (status --all): the oldest, and how many
            parts.append(calls[0][0] + (f" (+{len(calls) - 1} more)" if len(calls) > 1 else ""))
        text = f"{': '.join(parts)}  {now - min(starts):.1f} s"
    return f"\x1b[2m{text}\x1b[0m" if colour() else text


def _draw() -> None:
    global _drawn
    text = render()
    with _lock:
        if text is None or not line_enabled():
            return
        width = _width()
        sys.stderr.write("\r\x1b[2K" + (text if len(text) <= width else text[: width - 1] + "…"))
        sys.stderr.flush()
        _drawn = True


def _width() -> int:
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return max(20, columns - 1) if columns else 79  # a terminal that says 0 columns: assume 80


def _ensure_ticker() -> None:
    global _ticker
    if not line_enabled():
        return
    with _lock:
        if _ticker is not None and _ticker.is_alive():
            return
        _ticker = threading.Thread(target=_tick, name="d1ops-progress", daemon=True)
        _ticker.start()


def _tick() -> None:
    while True:
        time.sleep(TICK)
        with _lock:
            if _step is None and not _calls:
                return
        _draw()
