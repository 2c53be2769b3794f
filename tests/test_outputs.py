"""What a command writes: never one of its inputs, all outputs or none, a saved state
updated by one process at a time, and no temporary file left by an error or a signal."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import check_one_line_error, fails_cleanly, run_cli, snapshot
from rfmx import RFMState, RfmxError
from rfmx.outputs import CommandFiles, StateLock, Terminated, signals_raise

AS_OF = "2026-06-01"


def ok(result):
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A small generated history, and the same rows split in two by time (old, new) and the
    new ones split again (new-a, new-b) for folding."""
    root = tmp_path_factory.mktemp("history")
    ok(run_cli("generate", root / "all.parquet", "--rows", 3000, "--customers", 120, "--seed", 7, "--no-progress"))
    table = pq.read_table(root / "all.parquet")
    pq.write_table(table.slice(0, 2000), root / "old.parquet")
    pq.write_table(table.slice(2000), root / "new.parquet")
    pq.write_table(table.slice(2000, 500), root / "new-a.parquet")
    pq.write_table(table.slice(2500), root / "new-b.parquet")
    return root


@pytest.fixture
def work(tmp_path, history):
    """A folder with a copy of the history (orders.parquet) and garbage in every other input:
    a refused output must be refused before any input is read."""
    w = tmp_path / "work"
    w.mkdir()
    shutil.copy(history / "all.parquet", w / "orders.parquet")
    for name in ("state.arrow", "map.toml", "weights.toml", "model.json", "scores.parquet"):
        (w / name).write_bytes(b"not read before the outputs are checked")
    return w


def aggregated(paths) -> pa.Table:
    return rfmx.aggregate([str(p) for p in paths], as_of=AS_OF).sort_by("customer_id")


def state_result(path) -> pa.Table:
    return RFMState.load(path).finalize(as_of=AS_OF).sort_by("customer_id")


def no_leftovers(folder) -> None:
    """No temporary file and no lock file in ``folder``."""
    left = [p for p in os.listdir(folder) if p.endswith((".tmp", ".lock"))]
    assert left == [], left


# --- an output that is an input ---------------------------------------------------------------------

INPUT_FILES = {"SOURCES": "orders.parquet", "SOURCE": "scores.parquet", "--state-in": "state.arrow",
               "--segments": "map.toml", "--weights": "weights.toml", "--model-in": "model.json",
               "--spend-model-in": "model.json"}

# (command, output option, input option, other options): every output option of every command
PAIRS = [
    ("aggregate", "-o", "SOURCES", []),
    ("aggregate", "--state-out", "SOURCES", []),
    ("aggregate", "-o", "--state-in", []),
    ("score", "-o", "SOURCES", []),
    ("score", "--state-out", "SOURCES", []),
    ("score", "--state-out", "--segments", []),
    ("score", "--state-out", "--weights", []),
    ("score", "-o", "--state-in", []),
    ("cluster", "-o", "SOURCES", []),
    ("cluster", "--state-out", "SOURCES", []),
    ("cluster", "--k-table", "SOURCES", ["--k-range", "2..3"]),
    ("cluster", "--profiles", "SOURCES", []),
    ("cluster", "--model-out", "--model-in", []),
    ("cluster", "--model-out", "--segments", []),
    ("clv", "-o", "SOURCES", []),
    ("clv", "--state-out", "SOURCES", []),
    ("clv", "--calibration-out", "SOURCES", ["--holdout-start", "2025-06-01"]),
    ("clv", "--model-out", "--spend-model-in", []),
    ("clv", "--spend-model-out", "--model-in", []),
    ("summary", "-o", "SOURCE", []),
]


def command_line(command, out_option, out, in_option, given, extra):
    args = [command]
    if in_option in ("SOURCES", "SOURCE"):
        args.append(given)
    else:
        args += ["orders.parquet", in_option, given]
    return args + [out_option, out] + extra


@pytest.mark.parametrize("kind", ["same path", "relative spelling", "symlink", "hard link"])
@pytest.mark.parametrize("command, out_option, in_option, extra", PAIRS,
                         ids=[f"{c} {o} on {i}" for c, o, i, _ in PAIRS])
def test_output_that_is_an_input_is_refused(work, monkeypatch, command, out_option, in_option, extra, kind):
    monkeypatch.chdir(work)
    name = INPUT_FILES[in_option]
    given = str(work / name)
    if kind == "same path":
        out = given
    elif kind == "relative spelling":
        out = f"./{name}"
    elif kind == "symlink":
        out = str(work / f"link-{name}")
        os.symlink(given, out)
    else:
        out = str(work / f"hard-{name}")
        os.link(given, out)
    line = fails_cleanly(command_line(command, out_option, out, in_option, given, extra),
                         rf"{re.escape(out_option)} .* would overwrite the input {re.escape(in_option)} ", work)
    assert name in line


SOURCE_PAIRS = [p for p in PAIRS if p[2] == "SOURCES"]


@pytest.mark.parametrize("kind", ["inside a directory", "new file matching a glob", "file matched by a glob",
                                  "recursive glob"])
@pytest.mark.parametrize("command, out_option, in_option, extra", SOURCE_PAIRS,
                         ids=[f"{c} {o}" for c, o, _, _ in SOURCE_PAIRS])
def test_output_among_the_source_files_is_refused(work, command, out_option, in_option, extra, kind):
    data = work / "exports"
    (data / "2025").mkdir(parents=True)
    shutil.move(work / "orders.parquet", data / "2025" / "orders.parquet")
    suffix = ".csv" if out_option in ("--k-table", "--profiles", "--calibration-out") else ".parquet"
    if out_option == "--state-out":
        suffix = ".arrow"
    given, out = {
        "inside a directory": (data, data / f"result{suffix}"),
        "new file matching a glob": (data / "2025" / "*", data / "2025" / f"result{suffix}"),
        "file matched by a glob": (data / "2025" / "*.parquet", data / "2025" / "orders.parquet"),
        "recursive glob": (data / "**" / "*", data / "2025" / f"result{suffix}"),
    }[kind]
    fails_cleanly(command_line(command, out_option, out, in_option, str(given), extra),
                  rf"{re.escape(out_option)} .* would overwrite the input SOURCES ", work)


def test_output_beside_a_glob_is_written(work, history):
    """Only what the glob names is refused: a hidden name or another folder is fine."""
    (work / "in").mkdir()
    shutil.move(work / "orders.parquet", work / "in" / "orders.parquet")
    ok(run_cli("aggregate", str(work / "in" / "*.parquet"), "-o", work / "in" / "rfm.csv",
               "--state-out", work / "state.arrow", "--as-of", AS_OF))
    assert sorted(os.listdir(work / "in")) == ["orders.parquet", "rfm.csv"]
    assert state_result(work / "state.arrow").equals(aggregated([history / "all.parquet"]))


@pytest.mark.parametrize("command, args", [
    ("aggregate", ["-o", "{w}/r.arrow", "--state-out", "{w}/r.arrow"]),
    ("aggregate", ["-o", "{w}/r.arrow", "--state-out", "./r.arrow"]),
    ("cluster", ["-o", "{w}/r.csv", "--profiles", "{w}/hard.csv"]),
    ("cluster", ["-k", "3", "--k-range", "2..3", "--k-table", "{w}/k.csv", "--profiles", "{w}/k.csv"]),
    ("clv", ["--model-out", "{w}/m.json", "--spend-model-out", "{w}/link.json"]),
    ("clv", ["-o", "{w}/r.csv", "--holdout-start", "2025-06-01", "--calibration-out", "{w}/r.csv"]),
])
def test_two_outputs_that_are_the_same_file_are_refused(work, monkeypatch, command, args):
    monkeypatch.chdir(work)
    (work / "r.csv").write_text("an earlier result\n")
    os.link(work / "r.csv", work / "hard.csv")
    (work / "m.json").write_text("{}\n")
    os.symlink(work / "m.json", work / "link.json")
    fails_cleanly([command, work / "orders.parquet"] + [a.format(w=work) for a in args],
                  r"Error: \S+ \S+ and \S+ \S+ are the same file; give each its own", work)


# --- the incremental run ----------------------------------------------------------------------------


def test_daily_fold_into_the_same_state_file(work, history):
    state = work / "state.arrow"
    ok(run_cli("aggregate", history / "old.parquet", "--state-out", state))
    ok(run_cli("aggregate", history / "new.parquet", "--state-in", state, "--state-out", state,
               "-o", work / "rfm.parquet", "--as-of", AS_OF))
    assert state_result(state).equals(aggregated([history / "all.parquet"]))
    assert pq.read_table(work / "rfm.parquet").sort_by("customer_id").equals(aggregated([history / "all.parquet"]))
    no_leftovers(work)


@pytest.mark.parametrize("command, extra", [("score", ["-o", "{w}/scores.parquet"]),
                                            ("cluster", ["-k", "3", "-o", "{w}/clusters.parquet"]),
                                            ("clv", ["-o", "{w}/clv.parquet"])])
def test_every_command_folds_into_its_state_in_place(work, history, command, extra):
    state = work / "s.arrow"
    ok(run_cli(command, history / "old.parquet", "--state-out", state, *[a.format(w=work) for a in extra]))
    ok(run_cli(command, history / "new.parquet", "--state-in", state, "--state-out", f"{work}/./s.arrow",
               *[a.format(w=work) for a in extra]))
    if command == "clv":  # a BTYD state: the RFM state plus purchase periods
        from rfmx import BTYDState

        result = BTYDState.load(state).finalize(as_of=AS_OF).sort_by("customer_id")
    else:
        result = state_result(state)
    assert result.equals(aggregated([history / "all.parquet"]))
    no_leftovers(work)


# --- failures after the scan leave nothing ------------------------------------------------------------


def fails_late(args, pattern: str, *watched) -> str:
    """As :func:`badinput.fails_cleanly` for a command that printed progress before it failed:
    exit 1, the last line of stderr is the one error, no traceback, nothing written."""
    before = snapshot(*watched)
    r = run_cli(*args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.strip().splitlines()
    line = check_one_line_error(r.exit_code, lines[-1], r.stdout, pattern)
    assert not any(x.startswith("Error") for x in lines[:-1]) and "Traceback" not in r.stderr
    assert snapshot(*watched) == before
    return line


@pytest.fixture
def folded(work, history):
    """``work`` with a saved state of the old orders (state.arrow)."""
    ok(run_cli("aggregate", history / "old.parquet", "--state-out", work / "state.arrow"))
    return work


def test_score_whose_segment_map_fails_after_the_scan(folded, history):
    """With --clv, the segment map's fields are known only on the scored table: the state
    was already staged when the map fails, and neither it nor -o is written."""
    (folded / "late.toml").write_text('[[segment]]\nname = "x"\nnonexistent = { min = 3 }\n')
    ok(run_cli("clv", history / "old.parquet", "--state-out", folded / "btyd.arrow"))
    fails_late(["score", history / "new.parquet", "--clv", "bgnbd", "--segments", folded / "late.toml",
                "--state-in", folded / "btyd.arrow", "--state-out", folded / "btyd.arrow",
                "-o", folded / "scores.parquet"], r"late\.toml line 3: .*unknown field 'nonexistent'", folded)


def test_clv_that_fails_after_the_purchase_model(folded, history):
    (folded / "spend.json").write_text('{"format": "something else"}\n')
    fails_late(["clv", history / "new.parquet", "--state-out", folded / "btyd.arrow", "--model-out",
                folded / "m.json", "--spend-model-in", folded / "spend.json", "-o", folded / "clv.parquet"],
               r"spend\.json: not an rfmx CLV model", folded)


def test_cluster_whose_fit_fails_after_the_k_table(folded, history):
    fails_late(["cluster", history / "new.parquet", "--state-in", folded / "state.arrow", "--state-out",
                folded / "state.arrow", "--k-range", "2..3", "--k-table", folded / "k.csv", "-k", "500",
                "-o", folded / "clusters.parquet"], r"n_clusters=500 is more than the \d+ customers", folded)


def test_output_folder_removed_between_two_writes(folded, history, monkeypatch):
    """-o is staged, then the --state-out folder disappears: nothing is written at all."""
    (folded / "sub").mkdir()
    import rfmx.outputs

    real = rfmx.outputs.write_format

    def write_then_lose_the_folder(*args, **kwargs):
        real(*args, **kwargs)
        shutil.rmtree(folded / "sub")  # with the lock file of the state inside

    monkeypatch.setattr(rfmx.outputs, "write_format", write_then_lose_the_folder)
    fails_late(["aggregate", history / "new.parquet", "--state-in", folded / "state.arrow",
                "-o", folded / "rfm.parquet", "--state-out", folded / "sub" / "state.arrow"],
               r"state\.arrow: directory .*sub does not exist", folded)
    assert not (folded / "sub").exists() and not (folded / "rfm.parquet").exists()


def test_rename_that_fails_part_way_says_so_and_keeps_the_old_state(folded, history, monkeypatch):
    """The state is renamed last: when a result cannot be put in place, the old state stays,
    so repeating the run does not fold the same orders twice."""
    before = (folded / "state.arrow").read_bytes()
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("profiles.csv"):
            raise OSError(30, "Read-only file system")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    r = run_cli("cluster", history / "new.parquet", "-k", 3, "--state-in", folded / "state.arrow",
                "--state-out", folded / "state.arrow", "-o", folded / "clusters.parquet",
                "--profiles", folded / "profiles.csv")
    line = check_one_line_error(r.exit_code, r.stderr.strip().splitlines()[-1], r.stdout,
                                r"profiles\.csv: cannot replace it: Read-only file system "
                                r"\(.*clusters\.parquet already written, the rest not\)")
    assert "state.arrow" not in line.split("(")[1]
    assert (folded / "state.arrow").read_bytes() == before
    assert (folded / "clusters.parquet").exists() and not (folded / "profiles.csv").exists()
    no_leftovers(folded)


# --- one writer per state -----------------------------------------------------------------------------

LOCKED = r"another rfmx process is updating .*state\.arrow; try again when it has finished"


def test_a_second_process_cannot_update_a_locked_state(folded, history):
    state = folded / "state.arrow"
    args = ["aggregate", history / "new.parquet", "--state-in", state, "--state-out", state,
            "-o", folded / "rfm.parquet", "--as-of", AS_OF]
    with StateLock(state):  # the first writer, holding the state for as long as it likes
        fails_cleanly(args, LOCKED, folded, process=True)
    assert not (folded / ".state.arrow.lock").exists()
    ok(run_cli(*args))  # once it has finished, the same run goes through
    assert state_result(state).equals(aggregated([history / "all.parquet"]))
    no_leftovers(folded)


@pytest.mark.parametrize("args", [
    ["aggregate", "--state-in", "{w}/state.arrow", "-o", "{w}/out.parquet"],
    ["aggregate"],  # --state-out alone takes the lock too
    ["score", "--state-in", "{w}/state.arrow", "-o", "{w}/out.parquet"],
    ["cluster", "-k", "3", "--state-in", "{w}/state.arrow", "-o", "{w}/out.parquet"],
    ["clv", "--state-in", "{w}/state.arrow", "-o", "{w}/out.parquet"],
], ids=["aggregate", "aggregate without --state-in", "score", "cluster", "clv"])
def test_every_command_takes_the_state_lock(folded, history, args):
    command_args = [args[0], history / "new.parquet", "--state-out", f"{folded}/./state.arrow"]
    with StateLock(folded / "state.arrow"):
        fails_cleanly(command_args + [a.format(w=folded) for a in args[1:]], LOCKED, folded)


def test_two_concurrent_folds_never_lose_orders(folded, history):
    """Two real processes fold different orders into one state at once: both succeed one after
    the other, or one is refused — never both succeed with the orders of one missing."""
    state = folded / "state.arrow"
    procs = {part: subprocess.Popen([sys.executable, "-c", "from rfmx.cli.main import main; main()",
                                     "aggregate", history / f"{part}.parquet", "--state-in", state,
                                     "--state-out", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for part in ("new-a", "new-b")}
    done = {part: (p.communicate(timeout=300)[1], p.returncode)[::-1] for part, p in procs.items()}
    folded_in = [part for part, (code, _) in done.items() if code == 0]
    for part, (code, err) in done.items():
        if code != 0:
            assert code == 1 and re.search(rf"Error: ({LOCKED}|.*the state changed since it was read)", err), err
    assert folded_in, done
    expected = aggregated([history / "old.parquet"] + [history / f"{part}.parquet" for part in folded_in])
    assert state_result(state).equals(expected)
    no_leftovers(folded)


def test_state_rewritten_behind_the_lock_is_not_overwritten(tmp_path):
    """The second line of defence: a writer that ignores the lock replaced the state while
    this run worked on the copy it read — this run refuses to commit."""
    state = tmp_path / "state.arrow"
    state.write_text("the state this run read")
    files = CommandFiles().state("--state-in", state, "--state-out", state)
    with pytest.raises(RfmxError, match=r"state\.arrow: the state changed since it was read"):
        with files:
            files.write_text("--state-out", "this run's state")
            (tmp_path / "other").write_text("another writer's state")
            os.replace(tmp_path / "other", state)
    assert state.read_text() == "another writer's state"
    assert sorted(os.listdir(tmp_path)) == ["state.arrow"]


def test_state_lock_is_exclusive_and_leaves_no_file(tmp_path):
    state = tmp_path / "s.arrow"
    lock = StateLock(state).acquire()
    assert lock.path == tmp_path / ".s.arrow.lock" and lock.path.exists()
    with pytest.raises(RfmxError, match=r"another rfmx process is updating .*s\.arrow"):
        StateLock(tmp_path / "." / "s.arrow").acquire()
    lock.release()
    assert os.listdir(tmp_path) == []
    with StateLock(state):
        assert os.listdir(tmp_path) == [".s.arrow.lock"]
    assert os.listdir(tmp_path) == []


def test_state_lock_follows_a_lock_file_replaced_while_it_was_taken(tmp_path, monkeypatch):
    """The previous holder removes the lock file just as this process opens it: the lock
    taken on the removed file is worthless, so it is taken again on the file now there."""
    import fcntl

    state = tmp_path / "s.arrow"
    real = fcntl.flock
    calls = []

    def flock_after_the_holder_left(fd, op):
        if not calls and op != fcntl.LOCK_UN:  # the first attempt: the file it opened is replaced
            os.unlink(tmp_path / ".s.arrow.lock")
            (tmp_path / ".s.arrow.lock").write_text("")
        calls.append(op)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    with StateLock(state) as lock:
        assert len(calls) == 2  # locked, found the name leads elsewhere, locked again
        monkeypatch.setattr(fcntl, "flock", real)
        with pytest.raises(RfmxError, match="another rfmx process is updating"):
            StateLock(state).acquire()  # the lock now guards the file the name leads to
        assert os.listdir(tmp_path) == [".s.arrow.lock"] and lock.path.exists()
    assert os.listdir(tmp_path) == []


def test_lock_file_of_a_killed_process_does_not_block(folded, history):
    """A process killed outright (SIGKILL) leaves its lock file, but not its lock: the next
    run takes it and removes the file."""
    (folded / ".state.arrow.lock").write_text("")
    state = folded / "state.arrow"
    ok(run_cli("aggregate", history / "new.parquet", "--state-in", state, "--state-out", state))
    assert state_result(state).equals(aggregated([history / "all.parquet"]))
    no_leftovers(folded)


def test_command_files_from_python_all_or_none(tmp_path):
    table = pa.table({"customer_id": [1, 2], "n_orders": [3, 4]})
    files = CommandFiles().write("result", tmp_path / "r.parquet", table=True).write("notes", tmp_path / "n.txt")
    with pytest.raises(ZeroDivisionError):
        with files:
            files.write_table("result", table)
            files.write_text("notes", "half done")
            1 / 0
    assert os.listdir(tmp_path) == []
    with files:
        files.write_table("result", table)
        files.write_text("notes", "done")
        assert not (tmp_path / "r.parquet").exists()  # nothing in place before the end
    assert pq.read_table(tmp_path / "r.parquet").equals(table) and (tmp_path / "n.txt").read_text() == "done"
    assert sorted(os.listdir(tmp_path)) == ["n.txt", "r.parquet"]


# --- signals --------------------------------------------------------------------------------------

# The CLI with a pause before the first rename (the state's, which is saved through a staged
# path of its own, or the command's): outputs staged, the lock held.
PAUSED_BEFORE_COMMIT = """
import sys, time
from rfmx.outputs import CommandFiles
def paused_commit(self):
    open(sys.argv[1], "w").close()
    time.sleep(300)
CommandFiles.commit = paused_commit
from rfmx.cli.main import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)])
def test_signal_while_writing_leaves_nothing(folded, history, tmp_path, signum, exit_code):
    state = folded / "state.arrow"
    ready = tmp_path / "staged"
    before = snapshot(folded)
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_BEFORE_COMMIT, ready, "aggregate",
                             history / "new.parquet", "--state-in", state, "--state-out", state,
                             "-o", folded / "rfm.parquet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate()
        staged = sorted(p for p in os.listdir(folded) if p.endswith((".tmp", ".lock")))
        # -o staged, --state-out being staged and the lock held: there is something to clean up
        assert ".state.arrow.lock" in staged and len(staged) >= 3, staged
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == exit_code, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert snapshot(folded) == before
    no_leftovers(folded)


def test_signals_raise_turns_sigterm_into_an_exception_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # someone else handles SIGTERM here: signals_raise leaves it alone
        pytest.skip("SIGTERM has a handler in this test process")
    with pytest.raises(Terminated, match="terminated by SIGTERM"):
        with signals_raise():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal is delivered
    assert signal.getsignal(signal.SIGTERM) is previous


def test_parquet_layout_follows_the_values():
    # dictionary for few distinct values, Snappy only where it saves, and the file reads
    # back equal whatever was chosen
    import numpy as np
    import pyarrow.parquet as pq

    from rfmx.sinks import parquet_layout, write_table

    rng = np.random.default_rng(0)
    n = 200_000
    table = pa.table({"ids": rng.integers(0, 2**62, n), "days": rng.integers(0, 700, n),
                      "money": np.round(rng.lognormal(8, 1, n), 2), "segment": rng.choice(["a", "bb", "ccc"], n),
                      "empty": pa.nulls(n, pa.int64())})
    layout = parquet_layout(table)
    assert set(layout["use_dictionary"]) == {"days", "segment", "empty"}
    assert layout["compression"]["ids"] == "none" and layout["compression"]["money"] == "snappy"
    assert parquet_layout(table.slice(0, 0)) == {"use_dictionary": [], "compression": dict.fromkeys(table.column_names, "snappy")}
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.parquet")
        write_table(table, path)
        assert pq.read_table(path).equals(table)
        meta = pq.ParquetFile(path).metadata.row_group(0)
        assert meta.column(0).compression == "UNCOMPRESSED" and meta.column(2).compression == "SNAPPY"
