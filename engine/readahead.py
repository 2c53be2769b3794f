"""Reading one step ahead: an iterable's items produced on a thread while the caller works.

Decoding Parquet row groups or a database driver's batches releases the GIL, so a reader
thread that stays one or two batches ahead overlaps input with rfmx's conversions and
kernels.  The queue between them is bounded, so memory holds at most ``depth`` waiting
items whatever the input's size.
"""
from __future__ import annotations

from typing import Iterable, Iterator

__all__ = ["read_ahead"]


def read_ahead(items: Iterable, *, depth: int = 2, name: str = "rfmx-reader") -> Iterator:
    """``items``' values in order, each taken from ``items`` on a thread ahead of the caller.

    An exception raised while producing them reaches the caller at that point; when the
    caller stops early (closes the generator, or an error of its own), the thread stops
    too and is joined before this returns."""
    import queue
    import threading

    done = object()
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # anything must reach the caller, or it waits forever
            put(exc)

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
