"""Progress on stderr for long inputs: rows done and rows per second, redrawn at most twice a second."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``with Progress(enabled) as p: p.advance(rows, customers)``; prints nothing when disabled."""

    def __init__(self, enabled: bool, label: str = "rfmx", stream=None):
        self.enabled = enabled
        self.label = label
        self.stream = stream or sys.stderr
        self.rows = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def __enter__(self) -> "Progress":
        self.start = time.perf_counter()
        return self

    def advance(self, rows: int, customers: int | None = None) -> None:
        self.rows += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= 0.5:
            self._last = now
            self._draw(now, customers, end="\r")

    def _draw(self, now: float, customers: int | None, end: str) -> None:
        elapsed = max(now - self.start, 1e-9)
        text = f"{self.label}: {self.rows:,} rows, {self.rows / elapsed / 1e6:.2f} M rows/s"
        if customers is not None:
            text += f", {customers:,} customers"
        self.stream.write(f"{text}, {elapsed:.1f} s   {end}")
        self.stream.flush()

    def __exit__(self, *exc) -> None:
        if self.enabled and exc[0] is None:
            self._draw(time.perf_counter(), None, end="\n")
