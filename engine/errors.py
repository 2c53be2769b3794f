"""The one exception type rfmx raises for bad input."""
from __future__ import annotations


class RfmxError(ValueError):
    """Bad input, bad options or an incompatible state file.

    The message is one line that names the source (file), the column and, where it
    applies, the first offending row, so the CLI can print it as is and exit non-zero.
    """
