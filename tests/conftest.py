"""Shared pytest setup.

With ``filterwarnings = error``, a failing hypothesis test made pytest crash with an
INTERNALERROR instead of reporting the failure: hypothesis' plugin imports libcst (to
suggest an ``@example`` patch), and libcst triggers a DeprecationWarning from
mypy_extensions at import.  Importing it here once, with that warning ignored, keeps
failure reports readable; nothing else is silenced.
"""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # libcst missing: hypothesis skips the patch suggestion itself
        pass
