"""A command's output files: checked against its inputs before anything is read, staged
beside their destinations, and renamed into place together only when the command succeeded.

:class:`CommandFiles` is what a command declares its files to::

    files = CommandFiles()
    files.read("SOURCES", *sources)
    files.state("--state-in", state_in, "--state-out", state_out)
    files.write("-o", output, table=True)
    with files:                       # checks, then locks the state: nothing is read before
        state = ...                   # the command's work
        files.save("--state-out", state)
        files.write_table("-o", table)
    # here every output is in place, or (on any error) none is and no temporary file is left

* No output may be one of the inputs (same path, same file through a link or another
  spelling, a file inside an input directory or matched by an input glob), and no two
  outputs may be the same file.  The one exception is the saved state of an incremental
  run, which a run reads and replaces (``--state-in X --state-out X``).
* A saved state is updated under an exclusive lock (:class:`StateLock`, ``flock`` on
  ``.NAME.lock`` beside it) held from before it is read until the new one is renamed in
  place, so two runs folding into one state cannot both succeed with one's orders lost.
* Temporary files are removed on any error, and on SIGTERM/SIGINT while
  :func:`signals_raise` is active (the CLI installs it for the duration of a command).
* An output that is not a file (:class:`rfmx.sinks.Destination`: a database table, standard
  output) is checked before anything is read too, staged in the temporary folder, and
  delivered at the commit: a database table inside one transaction, committed before the
  files are renamed; standard output written then.  An error leaves it as it was.
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import signal
import tempfile
import threading
from pathlib import Path

from .errors import RfmxError
from .sinks import Destination, output_format, write_format

try:
    import fcntl
except ImportError:  # Windows: the state identity check at commit time is the only guard there
    fcntl = None

__all__ = ["CommandFiles", "StateLock", "Terminated", "check_destination", "signals_raise"]


# --- signals --------------------------------------------------------------------------------------


class Terminated(BaseException):
    """A termination signal (SIGTERM, SIGHUP) turned into an exception so that cleanups run.

    A ``BaseException`` like ``KeyboardInterrupt``: no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


# While a file is being created, renamed or removed, a signal must not leave it half done:
# the handler only notes the signal then, and it is raised when the section ends.
_guard = threading.local()


@contextlib.contextmanager
def _uninterrupted():
    depth = getattr(_guard, "depth", 0)
    _guard.depth = depth + 1
    try:
        yield
    finally:
        _guard.depth = depth
        pending = getattr(_guard, "pending", None)
        if depth == 0 and pending is not None:
            _guard.pending = None
            _raise_for(pending)


def _raise_for(signum: int):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum, frame):
    if getattr(_guard, "depth", 0):
        _guard.pending = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def signals_raise():
    """For the duration of the block, SIGTERM and SIGHUP raise :class:`Terminated` and SIGINT
    raises ``KeyboardInterrupt``, so that temporary files and locks are cleaned up; signals
    that arrive while a file is being created, renamed or removed wait until it is done.
    Only signals with their default disposition are taken over (an ignored SIGINT stays
    ignored); the previous handlers are restored after.  Outside the main thread: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name, default in (("SIGTERM", signal.SIG_DFL), ("SIGHUP", signal.SIG_DFL),
                          ("SIGINT", signal.default_int_handler)):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- staging one file -----------------------------------------------------------------------------


def check_destination(path) -> Path:
    """``path`` as a :class:`Path` if a file can be written there: its folder exists and it is
    not a folder; otherwise an :class:`RfmxError`."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RfmxError(f"{path}: directory {parent} does not exist")
    if path.is_dir():
        raise RfmxError(f"{path}: is a directory, not a file")
    return path


def _stage(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` (``.NAME.RANDOM.tmp``, mode as an
    ordinary new file); call inside :func:`_uninterrupted` and record the result at once."""
    path = check_destination(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise RfmxError(f"{path}: cannot write in {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    return Path(tmp)


def _stage_elsewhere() -> Path:
    """An empty temporary file in the temporary folder, for a :class:`Destination`'s table."""
    try:
        fd, tmp = tempfile.mkstemp(prefix="rfmx-", suffix=".arrow")
    except OSError as exc:
        raise RfmxError(f"cannot create a temporary file in {tempfile.gettempdir()}: {exc.strerror or exc}") from None
    os.close(fd)
    return Path(tmp)


def _remove(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


# --- the state lock -------------------------------------------------------------------------------


def _identity(path) -> tuple[int, int, int, int] | None:
    """What tells a file apart from a rewritten one: device, inode, size, mtime (ns)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class StateLock:
    """An exclusive, non-blocking lock on a saved state file: ``flock`` on ``.NAME.lock``
    beside it, created on acquire and removed on release.

    A second process (or a second lock in this one) that tries to take it fails at once
    with an :class:`RfmxError`.  Without ``fcntl`` (Windows) acquiring does nothing.
    """

    def __init__(self, state_path):
        path = Path(os.path.realpath(state_path))  # every spelling of the state shares one lock
        self.state_path = Path(state_path)
        self.path = path.with_name(f".{path.name}.lock")
        self._fd = None

    def acquire(self) -> "StateLock":
        """Take the lock, or raise :class:`RfmxError` if another process holds it."""
        if fcntl is None or self._fd is not None:
            return self
        while True:
            with _uninterrupted():
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                except OSError as exc:
                    raise RfmxError(f"{self.state_path}: cannot create the lock file {self.path}: "
                                    f"{exc.strerror or exc}") from None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RfmxError(f"another rfmx process is updating {self.state_path}; "
                                    f"try again when it has finished") from None
                # The holder before us removes the lock file just before it unlocks: if the
                # name no longer leads to the file we locked, lock the new one instead.
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(fd)
                if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    self._fd = fd
                    return self
                os.close(fd)

    def release(self) -> None:
        """Remove the lock file (while still holding it, so nobody locks a stale one) and unlock."""
        if self._fd is None:
            return
        with _uninterrupted():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StateLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- inputs against outputs -----------------------------------------------------------------------


def _real(path) -> str:
    return os.path.realpath(os.fspath(path))


def _same_file(a, b) -> bool:
    """Same file: by inode when both exist (links), else by resolved path (other spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _real(a) == _real(b)


def _has_magic(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _glob_matches(pattern: str, path: str) -> bool:
    """Whether ``path`` (existing or not) is a file ``pattern`` names, as ``glob.glob(pattern,
    recursive=True)`` reads it: ``*`` stays within one folder, ``**`` spans folders, and
    hidden names match only a pattern part that starts with a dot."""
    parts = Path(os.path.abspath(pattern)).parts
    fixed = next((i for i, p in enumerate(parts) if _has_magic(p)), len(parts))
    root = Path(_real(Path(*parts[:fixed]))).parts
    wanted, target = list(root) + list(parts[fixed:]), Path(_real(path)).parts

    def match(i: int, j: int) -> bool:
        if i == len(wanted):
            return j == len(target)
        if wanted[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(target) + 1)
                       if not any(t.startswith(".") for t in target[j:k]))
        if j == len(target):
            return False
        name, part = target[j], wanted[i]
        if name.startswith(".") and not part.startswith("."):
            return False
        return fnmatch.fnmatchcase(name, part) and match(i + 1, j + 1)

    return match(0, 0)


def _reads(source: str, output: str) -> bool:
    """Whether reading ``source`` (a file, folder or glob) could read the file ``output``."""
    if _has_magic(source):  # as rfmx.sources reads it: a glob whenever it has a wildcard
        if _glob_matches(source, output):
            return True
        return any(_same_file(p, output) for p in glob.glob(source, recursive=True))
    if os.path.isdir(source):
        inside = _real(output)
        return inside.startswith(_real(source).rstrip(os.sep) + os.sep)
    return _same_file(source, output)


# --- the command's files --------------------------------------------------------------------------


class CommandFiles:
    """The input and output files of one command: see the module docstring.

    Declare inputs with :meth:`read`, outputs with :meth:`write` and a saved state that the
    command reads and may replace with :meth:`state`; then enter the object (``with``).
    Entering checks every output against every input and each other, and takes the state
    lock; inside, each output is written once, to a temporary file beside it
    (:meth:`staged`, :meth:`write_table`, :meth:`save`, :meth:`write_text`); leaving
    without an error renames them all into place (:meth:`commit`), leaving with one
    removes them.  Options are named as the user gave them (``-o``, ``--state-out``) so
    that errors can say which one is wrong.
    """

    def __init__(self):
        self._inputs: list[tuple[str, str]] = []
        self._source_objects: list[tuple[str, object]] = []  # databases, standard input: no file to guard
        self._outputs: dict[str, Path | Destination] = {}
        self._tables: set[str] = set()
        self._state: tuple[str | None, str | None, str | None] = (None, None, None)
        self._staged: dict[str, Path] = {}
        self._lock: StateLock | None = None
        self._prepared: list[Destination] = []
        self._state_read: tuple | None = None
        self._entered = False

    # declaring

    def read(self, option: str, *paths) -> "CommandFiles":
        """Declare inputs: files, folders or globs given to ``option`` (``None`` is skipped), or
        source objects (a database query, standard input)."""
        for p in paths:
            if isinstance(p, (str, os.PathLike)):
                self._inputs.append((option, os.fspath(p)))
            elif p is not None:
                self._source_objects.append((option, p))
        return self

    def write(self, option: str, path, *, table: bool = False) -> "CommandFiles":
        """Declare the output file of ``option`` (``None``: not asked for), or a
        :class:`Destination`.  ``table=True``: a table whose format follows the suffix,
        checked when the files are checked."""
        if path is not None:
            self._outputs[option] = path if isinstance(path, Destination) else Path(path)
            if table:
                self._tables.add(option)
        return self

    def state(self, in_option: str, state_in, out_option: str, state_out) -> "CommandFiles":
        """Declare a saved state read from ``state_in`` and/or written to ``state_out``: the
        only output allowed to replace an input, and it is updated under a :class:`StateLock`."""
        self.read(in_option, state_in)
        self.write(out_option, state_out)
        self._state = (in_option, os.fspath(state_in) if state_in is not None else None,
                       out_option if state_out is not None else None)
        return self

    def wants(self, option: str) -> bool:
        """Whether the output of ``option`` was asked for."""
        return option in self._outputs

    # checking and locking

    def check(self) -> None:
        """Refuse (:class:`RfmxError`) an output that cannot be written, that is an input or
        that is another output — before anything is read or written."""
        for option in self._tables:
            output_format(self._outputs[option])
        files = {option: path for option, path in self._outputs.items() if not isinstance(path, Destination)}
        for path in files.values():
            check_destination(path)
        for option, destination in self._outputs.items():
            if option in files:
                continue
            for in_option, source in self._source_objects:
                if destination.overwrites(source):
                    raise RfmxError(f"{option} {destination} would overwrite the input {in_option} {source}; "
                                    f"write it somewhere else")
            destination.check()
        state_option, state_in, state_out = self._state
        for option, path in files.items():
            for in_option, source in self._inputs:
                if (option, in_option) == (state_out, state_option) and _same_file(source, path):
                    continue  # the incremental run: it reads the state and replaces it
                if _reads(source, os.fspath(path)):
                    raise RfmxError(f"{option} {path} would overwrite the input {in_option} {source}; "
                                    f"write it somewhere else")
        seen: list[tuple[str, Path]] = []
        for option, path in files.items():
            for other, earlier in seen:
                if _same_file(earlier, path):
                    raise RfmxError(f"{option} {path} and {other} {earlier} are the same file; give each its own")
            seen.append((option, path))

    def __enter__(self) -> "CommandFiles":
        self.check()
        _, state_in, state_out = self._state
        if state_out is not None:
            self._lock = StateLock(self._outputs[state_out]).acquire()
            if state_in is not None and _same_file(state_in, self._outputs[state_out]):
                self._state_read = _identity(self._outputs[state_out])
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()

    # writing

    def staged(self, option: str) -> Path:
        """The temporary file the output of ``option`` is written to (created empty, once)."""
        if not self._entered:
            raise RuntimeError("enter the CommandFiles (with ...) before writing outputs")
        if option not in self._outputs:
            raise KeyError(f"no output declared for {option}")
        if option not in self._staged:
            with _uninterrupted():
                path = self._outputs[option]
                self._staged[option] = _stage_elsewhere() if isinstance(path, Destination) else _stage(path)
        return self._staged[option]

    def write_table(self, option: str, table) -> None:
        """Stage ``table`` as the output of ``option`` (format from its suffix)."""
        path = self._outputs[option]
        write_format(table, self.staged(option), output_format(path), where=path)

    def save(self, option: str, obj) -> None:
        """Stage ``obj.save(path)`` (a state or a model) as the output of ``option``."""
        obj.save(self.staged(option))

    def write_text(self, option: str, text: str) -> None:
        """Stage ``text`` (UTF-8) as the output of ``option``."""
        self.staged(option).write_text(text, encoding="utf-8")

    # ending

    def commit(self) -> None:
        """Deliver every staged :class:`Destination` and rename every staged file onto its
        destination.  Refuses (nothing written) when a state read from the file it replaces
        has changed since it was read; if a rename fails part way, the error says which
        outputs are already in place."""
        state_out = self._state[2]
        destinations = [option for option in self._staged if isinstance(self._outputs[option], Destination)]
        # Writing into a database takes as long as the table is big: outside the uninterrupted
        # section, so Ctrl-C still stops it (and discard() rolls it back).
        for option in destinations:
            self._prepared.append(self._outputs[option])
            self._outputs[option].prepare(self._staged[option])
        with _uninterrupted():
            if state_out in self._staged and self._state_read is not None:
                if _identity(self._outputs[state_out]) != self._state_read:
                    raise RfmxError(f"{self._outputs[state_out]}: the state changed since it was read "
                                    f"(another process wrote it); nothing was written")
            done: list[str] = []
            for option in destinations:
                try:
                    self._outputs[option].commit()
                except RfmxError as exc:
                    written = f" ({', '.join(done)} already written, the rest not)" if done else ""
                    raise RfmxError(f"{exc}{written}") from None
                self._prepared.remove(self._outputs[option])
                _remove(self._staged.pop(option))
                done.append(str(self._outputs[option]))
            # The state goes last: if a result cannot be renamed, the old state is still in
            # place and the run can be repeated without folding the same orders twice.
            order = sorted(self._staged, key=lambda option: option == state_out)
            for option in order:
                tmp = self._staged[option]
                path = self._outputs[option]
                try:
                    os.replace(tmp, path)
                except OSError as exc:
                    written = f" ({', '.join(done)} already written, the rest not)" if done else ""
                    raise RfmxError(f"{path}: cannot replace it: {exc.strerror or exc}{written}") from None
                del self._staged[option]
                done.append(str(path))

    def discard(self) -> None:
        """Remove every staged output not committed and release the state lock."""
        with _uninterrupted():
            try:
                while self._prepared:
                    self._prepared.pop().rollback()
                for option in list(self._staged):
                    _remove(self._staged.pop(option))
            finally:
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                self._entered = False
