"""Reading saved models (JSON): every problem is one RfmxError naming the file and the field.

A model file may be damaged by hand edits, truncation or another program; a NaN centre or
a negative rate must not load and then poison every prediction.  Python's ``json``
accepts ``NaN`` and ``Infinity`` literals (and turns ``1e999`` into infinity), so numbers
are checked for finiteness explicitly.  Used by the k-means and CLV model loaders.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import RfmxError

__all__ = ["read_model_json", "Fields"]

def read_model_json(path, what: str) -> dict:
    """The JSON object in ``path``; ``what`` names the kind of model in messages.

    ``NaN``/``Infinity`` literals are decoded (a CLV model writes NaN for a standard error
    that does not exist) so that the field checks of :class:`Fields` can name the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RfmxError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise RfmxError(f"{path}: is a folder, not a model file") from None
    except UnicodeDecodeError:
        raise RfmxError(f"{path}: not an rfmx {what} (not UTF-8 JSON text)") from None
    except OSError as exc:
        raise RfmxError(f"{path}: cannot read the model file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RfmxError(f"{path}: not an rfmx {what} (not valid JSON: {' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise RfmxError(f"{path}: not an rfmx {what} (the file holds {_kind(data)}, not a JSON object)")
    return data


class Fields:
    """Typed reads of a decoded model's fields; failures are ``RfmxError("<where>: ...")``."""

    def __init__(self, where):
        self.where = str(where)

    def fail(self, message: str):
        raise RfmxError(f"{self.where}: {message}")

    def get(self, obj: dict, key: str, name: str | None = None):
        """``obj[key]``; a missing key is an error naming ``name`` (default: the key)."""
        if not isinstance(obj, dict):
            self.fail(f"{name or key}: expected a JSON object around it, got {_kind(obj)}")
        if key not in obj:
            self.fail(f"missing {name or repr(key)}")
        return obj[key]

    def mapping(self, value, name: str, *, optional: bool = False) -> dict | None:
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(f"{name} must be a JSON object, got {_kind(value)}")
        return value

    def number(self, value, name: str, *, minimum: float | None = None, positive: bool = False,
               nan_ok: bool = False, optional: bool = False) -> float | None:
        """A finite JSON number (``bool`` is not one); ``nan_ok``: NaN also (e.g. "n/a")."""
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{name} must be a number, got {_kind(value)}")
        v = float(value)
        if math.isnan(v) and nan_ok:
            return v
        if not math.isfinite(v):
            self.fail(f"{name} is {v} (not a finite number)")
        if positive and not v > 0:
            self.fail(f"{name} must be positive, got {v:g}")
        if minimum is not None and v < minimum:
            self.fail(f"{name} must be >= {minimum:g}, got {v:g}")
        return v

    def integer(self, value, name: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            self.fail(f"{name} must be a whole number, got {_kind(value)}")
        v = int(value)
        if minimum is not None and v < minimum:
            self.fail(f"{name} must be >= {minimum}, got {v}")
        return v

    def string(self, value, name: str, *, choices=None, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(f"{name} must be a string, got {_kind(value)}")
        if choices is not None and value not in choices:
            self.fail(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def array(self, value, name: str, *, length: int | None = None, positive: bool = False) -> np.ndarray:
        """A list of finite numbers as float64 (1-D)."""
        if not isinstance(value, list):
            self.fail(f"{name} must be a list of numbers, got {_kind(value)}")
        if length is not None and len(value) != length:
            self.fail(f"{name} has {len(value)} value(s), expected {length}")
        return np.array([self.number(v, f"{name}[{i}]", positive=positive) for i, v in enumerate(value)],
                        dtype=np.float64)

    def matrix(self, value, name: str, *, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        """A non-empty list of equally long non-empty lists of finite numbers (2-D float64)."""
        if not isinstance(value, list) or not value:
            self.fail(f"{name} must be a non-empty list of rows, got {_kind(value)}")
        if rows is not None and len(value) != rows:
            self.fail(f"{name} has {len(value)} row(s), expected {rows}")
        width = cols
        out = []
        for i, row in enumerate(value):
            if not isinstance(row, list) or not row:
                self.fail(f"{name}[{i}] must be a non-empty list of numbers, got {_kind(row)}")
            if width is None:
                width = len(row)
            out.append(self.array(row, f"{name}[{i}]", length=width))
        return np.array(out, dtype=np.float64)

    def strings(self, value, name: str, *, length: int | None = None) -> list[str]:
        if not isinstance(value, list):
            self.fail(f"{name} must be a list of strings, got {_kind(value)}")
        if length is not None and len(value) != length:
            self.fail(f"{name} has {len(value)} entries, expected {length}")
        return [self.string(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _kind(value) -> str:
    """A short description of a decoded JSON value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 30 else value[:27] + "..."
        return f"the string {text!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"
