"""What every bad-input case must show, in one place.

A command given bad input exits 1 with exactly one line on stderr (``Error: ...`` naming
the file or source, the column and the first offending row where they apply), prints no
traceback, and leaves every file it was pointed at as it was: no new file, no changed
file, no temporary file.  :func:`fails_cleanly` checks all of that for a CLI call.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from rfmx.cli.main import main


def snapshot(*roots) -> dict[str, tuple[int, str]]:
    """``{path: (size, sha256)}`` of every file under ``roots`` (files or folders), hidden ones too."""
    files = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            files[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return files


def run_cli(*args):
    """The CLI in this process (click's CliRunner); stderr kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def run_cli_process(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a fresh process (``python -m rfmx.cli``)."""
    return subprocess.run([sys.executable, "-c", "from rfmx.cli.main import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def check_one_line_error(exit_code: int, stderr: str, stdout: str, pattern: str, expected_code: int = 1) -> str:
    """Exit code 1 (2 for a usage error: an option out of range, options that exclude each
    other), one ``Error: ...`` line on stderr matching ``pattern``, no traceback."""
    assert exit_code == expected_code, (exit_code, stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in stderr + stdout
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def fails_cleanly(args, pattern: str, *watched, process: bool = False, exit_code: int = 1) -> str:
    """Run the CLI with ``args``; assert a one-line error matching ``pattern`` and that no
    file under ``watched`` (folders or files) was created, changed or removed."""
    before = snapshot(*watched)
    if process:
        r = run_cli_process(*args)
        line = check_one_line_error(r.returncode, r.stderr, r.stdout, pattern, exit_code)
    else:
        r = run_cli(*args)
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        line = check_one_line_error(r.exit_code, r.stderr, r.stdout, pattern, exit_code)
    after = snapshot(*watched)
    assert after == before, {"new or changed": sorted(set(after.items()) ^ set(before.items()))}
    return line


__all__ = ["snapshot", "run_cli", "run_cli_process", "check_one_line_error", "fails_cleanly"]
