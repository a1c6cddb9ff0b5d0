"""Named phases of a command, timed, with progress lines on stderr.

>>> clock = Phases(show=False)
>>> with clock("figures"):
...     with clock("samples"):
...         pass
>>> list(clock.seconds)
['samples', 'figures']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    """Wall-clock seconds per phase (``seconds``, in the order phases end); with ``show``, a
    line on stderr as each phase starts and, for one over a second, its time as it ends, so no
    phase passes in silence. Phases nest (a family's metrics inside the engine's)."""

    def __init__(self, show: bool = True):
        self.show = show
        self.seconds: dict[str, float] = {}
        self._depth = 0

    @contextmanager
    def __call__(self, name: str, label: str | None = None) -> Iterator[None]:
        text = "probdiff: " + "  " * self._depth + (label or name)
        if self.show:
            print(f"{text} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.show and elapsed >= 1.0:
                print(f"{text}: {elapsed:.1f} s", file=sys.stderr, flush=True)
