"""Progress on stderr for long inputs: rows done, rows per second, and with a known total
(Parquet footers, ``rfmx generate``) the percentage and the time left.

On a terminal one line is redrawn in place (``\\r``) at most twice a second; anywhere else
(a log file, a CI job, a pipe) a plain line is written every ``every`` seconds, so logs
hold readable lines instead of one long line of carriage returns.
"""
from __future__ import annotations

import sys
import time

__all__ = ["Progress", "format_duration"]

#: seconds between plain lines when the stream is not a terminal
LOG_EVERY = 10.0
#: seconds between redraws on a terminal
REDRAW_EVERY = 0.5


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``45 s``: a duration as a person reads it."""
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m}:{s:02d}" if m else f"{s} s"


class Progress:
    """``with Progress(enabled, total=rows) as p: p.advance(rows, customers)``; prints nothing
    when disabled.

    ``total``: the rows expected (None when unknown: only rows and speed are shown).  A total
    can be an overestimate (rows skipped by a window are never read), so the percentage is
    capped at 100 and the last line gives the rows actually read.  ``interactive``: redraw
    in place (default: when ``stream`` is a terminal); ``every``: seconds between plain
    lines otherwise."""

    def __init__(self, enabled: bool, label: str = "rfmx", stream=None, *, total: int | None = None,
                 interactive: bool | None = None, every: float = LOG_EVERY):
        self.enabled = enabled
        self.label = label
        self.stream = stream or sys.stderr
        self.total = total
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.every = REDRAW_EVERY if interactive else every
        self.rows = 0
        self.start = time.perf_counter()
        self._last = self.start

    def __enter__(self) -> "Progress":
        self.start = self._last = time.perf_counter()
        return self

    def advance(self, rows: int, customers: int | None = None) -> None:
        self.rows += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._draw(now, customers, final=False)

    def line(self, now: float, customers: int | None, final: bool) -> str:
        """The progress text at ``now`` (without line ending)."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.rows / elapsed
        if self.total:
            done = min(self.rows / self.total, 1.0)
            text = f"{self.label}: {self.rows:,} / {self.total:,} rows ({100 * done:.1f} %)"
        else:
            text = f"{self.label}: {self.rows:,} rows"
        text += f", {rate / 1e6:.2f} M rows/s"
        if customers is not None:
            text += f", {customers:,} customers"
        text += f", {format_duration(elapsed) if elapsed >= 60 else f'{elapsed:.1f} s'}"
        if self.total and not final and rate > 0 and self.rows < self.total:
            text += f", {format_duration((self.total - self.rows) / rate)} left"
        return text

    def _draw(self, now: float, customers: int | None, final: bool) -> None:
        text = self.line(now, customers, final)
        if self.interactive:
            self.stream.write(f"\r{text}   " + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __exit__(self, *exc) -> None:
        if self.enabled and exc[0] is None:
            self._draw(time.perf_counter(), None, final=True)
