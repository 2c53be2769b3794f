"""What a location names — a database or a file — told from the text alone (and a ``.db``
file's first bytes), with no database driver, pyarrow.dataset or pandas imported: every
command asks this of its SOURCES and -o before deciding what to import."""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["database_kind", "url_scheme"]

_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "sqlite": "sqlite", "duckdb": "duckdb"}
_SUFFIXES = {".duckdb": "duckdb", ".sqlite": "sqlite", ".sqlite3": "sqlite"}
_HEADERS = ((b"SQLite format 3\0", 0, "sqlite"), (b"DUCK", 8, "duckdb"))


def url_scheme(text: str) -> str | None:
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    return m.group(1).lower() if m else None


def database_kind(location) -> str | None:
    """``"postgresql"``, ``"sqlite"`` or ``"duckdb"`` if ``location`` names a database — a
    URI, a file with a database suffix, an existing ``.db`` file with a database header —
    else None."""
    if not isinstance(location, (str, os.PathLike)):
        return None
    text = os.fspath(location)
    scheme = url_scheme(text)
    if scheme is not None:
        return _SCHEMES.get(scheme)
    suffix = Path(text).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix == ".db":
        try:
            with open(text, "rb") as f:
                head = f.read(16)
        except OSError:
            return None
        for magic, at, kind in _HEADERS:
            if head[at:at + len(magic)] == magic:
                return kind
    return None
