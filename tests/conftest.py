"""Shared pytest setup.

With ``filterwarnings = error``, a failing hypothesis test made pytest crash with an
INTERNALERROR instead of reporting the failure: hypothesis' plugin imports libcst (to
suggest an ``@example`` patch), and libcst triggers a DeprecationWarning from
mypy_extensions at import.  Importing it here once, with that warning ignored, keeps
failure reports readable; nothing else is silenced.

The session fixture ``postgres`` is a throwaway PostgreSQL server for the database tests.
"""
import os
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # libcst missing: hypothesis skips the patch suggestion itself
        pass


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for this test session (``tests/pgserver.py``): started in a
    temporary folder on a free localhost port, stopped at the end.  Where no server can run
    the tests that need it are skipped with the reason — except under CI, whose ``.ci/run``
    installs one: there a missing server is a failure."""
    from pgserver import PostgresServer, Unavailable

    if not os.environ.get("CI"):
        pytest.importorskip("adbc_driver_postgresql", reason="the ADBC PostgreSQL driver is not installed (rfmx[db])")
    try:
        server = PostgresServer().start()
    except Unavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()
