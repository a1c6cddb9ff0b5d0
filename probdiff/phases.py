"""Named phases of a command, timed, with a progress line for each on stderr.

>>> clock = Phases(show=False)
>>> with clock("figures"):
...     pass
>>> list(clock.seconds)
['figures']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    """Wall-clock seconds per phase (``seconds``, in order); with ``show``, one line on stderr
    as each phase starts and its time when it ends, so no phase passes in silence."""

    def __init__(self, show: bool = True):
        self.show = show
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, label: str | None = None) -> Iterator[None]:
        if self.show:
            print(f"probdiff: {label or name} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.show:
                print(f" {elapsed:.1f} s", file=sys.stderr, flush=True)
