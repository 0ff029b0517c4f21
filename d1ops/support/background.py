"""Work run in a background thread beside the caller's own, its outcome handed back to the caller's thread.

Daemon threads: after Ctrl-C d1ops does not wait for them, and the wrangler process one of them started dies
with d1ops (lifeline.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """`work()` started at once in a daemon thread named `name`."""

    def __init__(self, work: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # handed to the caller's thread by result()
                self.error = exc

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the work has ended, however it ended."""
        self._thread.join()

    def result(self) -> None:
        """Until the work has ended; its exception, if it raised one, is raised here."""
        self.wait()
        if self.error is not None:
            raise self.error
