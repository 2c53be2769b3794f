"""The project config (``rfmx.toml``, ``pyproject.toml`` ``[tool.rfmx]``, ``--config FILE``):
precedence, ``rfmx config show``, bad keys and types, and that a run from a config equals
the same run with the options typed."""
from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from badinput import fails_cleanly, run_cli


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A small generated history with the columns renamed, so a run needs the column mapping."""
    root = tmp_path_factory.mktemp("history")
    path = root / "orders.parquet"
    assert run_cli("generate", path, "--rows", 3000, "--customers", 120, "--seed", 4, "--no-progress").exit_code == 0
    table = pq.read_table(path).rename_columns(["user_id", "order_no", "created_at", "total"])
    pq.write_table(table, root / "renamed.parquet")
    return root / "renamed.parquet"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def shown(*args) -> dict[str, tuple[str, str]]:
    """``rfmx config show ARGS`` as ``{key: (value, origin)}``."""
    r = run_cli("config", "show", *args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        key, rest = line.split(None, 1)
        value, origin = rest.rsplit(None, 1) if "command line" not in rest else (rest[:rest.index("command line")]
                                                                                   .strip(), "command line")
        rows[key] = (value.strip(), origin)
    return rows


MAPPING = 'customer = "user_id"\ntime = "created_at"\namount = "total"\norder-id = "order_no"\n'


def test_a_run_from_a_config_equals_the_run_with_flags(history, folder):
    write("rfmx.toml", MAPPING + 'timezone = "Asia/Tokyo"\namount-scale = 3\n\n[score]\nbins = 4\nties = "first"\n'
                                 'segments = "pymc-quartiles"\n'
                                 'weights = {monetary = 40, frequency = 30, recency = 30}\n'
                                 'tiers = {high = 10, medium = 30, low = 60}\ncuts = ["recency=30,90,180"]\n'
                                 f'sources = ["{history}"]\n')
    r = run_cli("score", "-o", "from_config.parquet")
    assert r.exit_code == 0, r.stderr
    typed = ["score", history, "--customer", "user_id", "--time", "created_at", "--amount", "total", "--order-id",
             "order_no", "--timezone", "Asia/Tokyo", "--amount-scale", "3", "--bins", "4", "--ties", "first",
             "--segments", "pymc-quartiles", "--weights", "monetary=40,frequency=30,recency=30",
             "--tiers", "high=10,medium=30,low=60", "--cuts", "recency=30,90,180", "-o", "typed.parquet", "--config", "/dev/null"]
    r = run_cli(*typed)
    assert r.exit_code == 0, r.stderr
    assert pq.read_table("from_config.parquet").equals(pq.read_table("typed.parquet"))
    # the shared top level reaches every command with the option
    assert run_cli("aggregate", history, "-o", "rfm.parquet").exit_code == 0
    assert pq.read_table("rfm.parquet").num_rows == pq.read_table("typed.parquet").num_rows


def test_the_command_line_wins(history, folder):
    write("rfmx.toml", MAPPING + '[score]\nbins = 4\nsegments = "pymc-quartiles"\n')
    r = run_cli("score", history, "--bins", "5", "--segments", "rfm-grid", "-o", "s.parquet")
    assert r.exit_code == 0, r.stderr
    assert max(pq.read_table("s.parquet").column("r_score").to_pylist()) == 5


def test_precedence_pyproject_then_rfmx_toml_then_config_file(folder):
    write("pyproject.toml", '[project]\nname = "shop"\n\n[tool.rfmx]\ncustomer = "a"\ntimezone = "UTC"\n\n'
                            '[tool.rfmx.score]\nbins = 3\nties = "first"\n')
    rows = shown("score")
    assert rows["customer"] == ('"a"', "pyproject.toml:5") and rows["bins"] == ("3", "pyproject.toml:9")
    assert rows["time"] == ('"order_time"', "default")
    write("rfmx.toml", 'customer = "b"\n[score]\nbins = 4\n')
    rows = shown("score")
    # rfmx.toml replaces pyproject key by key; what it does not set, pyproject still does
    assert rows["customer"] == ('"b"', "rfmx.toml:1") and rows["bins"] == ("4", "rfmx.toml:3")
    assert rows["ties"] == ('"first"', "pyproject.toml:10") and rows["timezone"] == ('"UTC"', "pyproject.toml:6")
    write("team.toml", "[score]\nbins = 6\n")
    # --config FILE replaces both discovered files, on the group or on the command
    for args in (["--config", "team.toml", "config", "show", "score"], ["config", "show", "score", "--config",
                                                                        "team.toml"]):
        r = run_cli(*args)
        assert r.exit_code == 0, r.stderr
        lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
        assert lines["bins"].split()[1:] == ["6", "team.toml:2"]
        assert lines["customer"].split()[1:] == ['"customer_id"', "default"]
    # and the command line beats them all
    assert shown("score", "--bins", "7")["bins"] == ("7", "command line")


def test_a_command_table_beats_the_top_level(folder):
    write("rfmx.toml", 'segments = "pymc-quartiles"\n[cluster]\nsegments = "none"\n')
    assert shown("score")["segments"] == ('"pymc-quartiles"', "rfmx.toml:1")
    assert shown("cluster")["segments"] == ('"none"', "rfmx.toml:3")


def test_config_show_lists_the_files_and_settings(folder):
    r = run_cli("config", "show")
    assert r.exit_code == 0 and "config files: none" in r.stdout
    write("rfmx.toml", 'customer = "user_id"\n\n[clv]\nhorizon = 6\nspend = false\n')
    r = run_cli("config", "show")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == "config files: rfmx.toml"
    assert "top level (every command with the option)" in r.stdout and "[clv]" in r.stdout
    assert "rfmx.toml:4" in r.stdout and "rfmx.toml:5" in r.stdout
    assert shown("clv")["spend"] == ("false", "rfmx.toml:5")


@pytest.mark.parametrize("text, pattern", [
    ("bnis = 4\n", r"rfmx\.toml:1: unknown key 'bnis' at the top level: no rfmx command has an option --bnis"),
    ("[score]\nhorizon = 4\n", r"rfmx\.toml:2: unknown key 'horizon' in \[score\]: rfmx score has no option"),
    ("[scroe]\nbins = 4\n", r"rfmx\.toml:1: unknown section \[scroe\]: not an rfmx command"),
    ("# team settings\n\n[score]\nbins = 4\n\n[scroe]\n# nothing yet\nbins = 4\n",
     r"rfmx\.toml:6: unknown section \[scroe\]"),
    ("[score]\nbins = \"4\"\n", r"rfmx\.toml:2: bins = \"4\": expected an integer \(rfmx score --bins\)"),
    ("amount-scale = 19\n", r"rfmx\.toml:1: amount-scale = 19: 19 is not in the range 0<=x<=18"),
    ("[score]\nties = \"last\"\n", r"rfmx\.toml:2: ties = \"last\": 'last' is not one of 'keep', 'first'"),
    ("[clv]\nspend = \"no\"\n", r"rfmx\.toml:2: spend = \"no\": expected true or false"),
    ("[score]\ncuts = \"recency=30,90\"\n", r"rfmx\.toml:2: cuts = .*expected a list of strings"),
    ("customer = [\n", r"rfmx\.toml: malformed TOML"),
])
def test_bad_config_is_one_line_exit_2_before_any_work(history, folder, text, pattern):
    write("rfmx.toml", text)
    fails_cleanly(["score", history, "-o", "s.parquet"], pattern, folder, exit_code=2)
    # --help still works with a broken config, and rfmx config show reports the same line
    assert run_cli("score", "--help").exit_code == 0
    fails_cleanly(["config", "show"], pattern, folder, exit_code=2)


def test_bad_config_in_pyproject_names_its_line(history, folder):
    write("pyproject.toml", '[project]\nname = "x"\n[tool.rfmx.timeline]\nevery = "year"\n')
    fails_cleanly(["timeline", history, "-o", "t.parquet"],
                  r"pyproject\.toml:4: every = \"year\": 'year' is not one of", folder, exit_code=2)


def test_missing_config_file(folder):
    fails_cleanly(["--config", "nope.toml", "aggregate", "x.parquet", "-o", "r.parquet"],
                  r"nope\.toml: config file not found", folder, exit_code=2)


def test_config_values_that_do_not_apply_to_this_run_are_left_out(history, folder):
    # a team config naming its database table must not break a run on a file
    write("rfmx.toml", MAPPING + 'table = "orders"\nif-exists = "replace"\n[aggregate]\nformat = "jsonl"\n')
    r = run_cli("aggregate", history, "-o", "r.parquet")
    assert r.exit_code == 0, r.stderr
    # typed, the same options are still refused
    fails_cleanly(["aggregate", history, "--table", "orders", "-o", "r2.parquet"],
                  r"--table is for a database SOURCE", folder, exit_code=2)


def test_a_top_level_value_must_suit_every_command_with_the_option(folder):
    # summary's --format (text, json, csv) is not -o -'s: such a value goes under [command]
    write("rfmx.toml", 'format = "jsonl"\n')
    fails_cleanly(["config", "show"], r"rfmx\.toml:1: format = \"jsonl\": .* \(rfmx summary --format\)", folder,
                  exit_code=2)


def test_help_stays_instant_with_a_config(folder):
    write("rfmx.toml", 'customer = "user_id"\n')
    code = ("import sys; from rfmx.cli.main import main\n"
            "try:\n    main(['config', 'show', 'score'])\nexcept SystemExit:\n    pass\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder)
    assert r.returncode == 0, r.stderr
    assert '"user_id"' in r.stdout
