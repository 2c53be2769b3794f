"""Early warnings: hand-built histories with known alerts, incremental runs that report
exactly what a full recomputation finds (each alert once), rules, the webhook and the CLI."""
from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from naive import orders_from_lines as history
from badinput import fails_cleanly, run_cli
from rfmx import RfmxError, TimelineState
from rfmx.early_warnings import alert_rules, alert_run, default_rules_toml, post_alerts
from rfmx.scores import score_table
from rfmx.stages import lifecycle_map

US_PER_DAY = 86_400_000_000


def every(customer, first, last, step_days, amount):
    d, out = dt.date.fromisoformat(first), []
    while d <= dt.date.fromisoformat(last):
        out.append((customer, d.isoformat(), amount))
        d += dt.timedelta(days=step_days)
    return out


def run(state, rules=None, start=None, as_of=None, **thresholds):
    stages = lifecycle_map()
    order = rfmx.SegmentMap.builtin("rfm-grid").order
    checks = alert_rules(rules, segments=order, stages=stages.order, **thresholds)
    return alert_run(state, score_table, stages=stages, checks=checks, segments=order, start=start, as_of=as_of)


def fading_champion():
    """Customer 1 buys big every week until 2023-06-25, then stops; 2..21 buy small monthly."""
    lines = every(1, "2022-01-02", "2023-06-25", 7, 400)
    for c in range(2, 22):
        lines += every(c, f"2022-01-{c:02d}", "2023-12-31", 30, 10 + c)
    return history(sorted(lines, key=lambda x: x[1]))


def alerts_by_date(table):
    out: dict = {}
    for r in table.to_pylist():
        out.setdefault(r["customer_id"], []).append((r["as_of_to"][:10], r["alert"]))
    return out


def test_a_fading_champion_is_flagged_when_overdue_and_not_before():
    state = rfmx.build_state(fading_champion(), state=TimelineState(period="month"))
    found, pairs, reason = run(state, start="2022-03-01")
    assert reason is None and len(pairs) == len(state.boundaries("2022-03-01")) - 1
    mine = alerts_by_date(found).get(1, [])
    # 2023-07-01: 6 days since the last order (gap 7): not overdue; 2023-08-01: 37 days (5.3x)
    assert ("2023-08-01", "overdue") in mine
    assert not [a for a in mine if a[0] < "2023-08-01" and a[1] == "overdue"]
    assert [a for a in mine if a[1] == "overdue"] == [("2023-08-01", "overdue")]  # once
    row = [r for r in found.to_pylist() if r["customer_id"] == 1 and r["alert"] == "overdue"][0]
    assert row["tier_before"] == "high" and row["overdue_ratio_before"] <= 2 < row["overdue_ratio_after"]
    # value at stake: the last year's net money (2022-08-01 .. 2023-07-31: weekly 400s)
    weekly = [d for _, d, _ in every(1, "2022-01-02", "2023-06-25", 7, 400) if "2022-08-01" <= d < "2023-08-01"]
    assert row["value_at_stake"] == pytest.approx(400 * len(weekly))


def test_steady_customers_are_never_overdue():
    lines = []
    for c in range(1, 21):
        lines += every(c, f"2022-01-{c:02d}", "2023-12-31", 14, 50 + c)
    state = rfmx.build_state(history(sorted(lines, key=lambda x: x[1])), state=TimelineState(period="month"))
    found, _, _ = run(state, start="2022-03-01")
    assert "overdue" not in found.column("alert").to_pylist()


def test_a_rule_of_ones_own(tmp_path):
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[alert]]\nname = "quiet"\noverdue_ratio = { gt = 2 }\nprevious_overdue_ratio = { max = 2 }\n')
    state = rfmx.build_state(fading_champion(), state=TimelineState(period="month"))
    found, _, _ = run(state, rules=str(rules), start="2022-03-01")
    assert alerts_by_date(found)[1] == [("2023-08-01", "quiet")]


@pytest.mark.parametrize("text, message", [
    ('[[alert]]\nname = "x"\nspend = { gt = 1 }\n', r"alerts.toml line 3: alert 'x': unknown field 'spend'"),
    ('[[alert]]\nname = "x"\nrank_drop = { min = 3, max = 1 }\n', r"alert 'x' can never fire: .*empty range"),
    ('[[alert]]\nname = "x"\nprevious_segment = "Champs"\n', r"unknown name 'Champs'; names: Champions"),
    ('default = "y"\n[[alert]]\nname = "x"\nrank_drop = 1\n', r"an alert map has no default"),
    ('[[alert]\n', r"malformed TOML"),
])
def test_bad_rules_are_one_line(tmp_path, text, message):
    rules = tmp_path / "alerts.toml"
    rules.write_text(text)
    with pytest.raises(RfmxError, match=message) as err:
        alert_rules(str(rules), segments=rfmx.SegmentMap.builtin("rfm-grid").order, stages=lifecycle_map().order)
    assert "\n" not in str(err.value)


def test_default_rules_follow_the_map():
    pymc = rfmx.SegmentMap.builtin("pymc-quartiles").order
    text = default_rules_toml(pymc)
    assert "previous_segment" not in text and text.count("[[alert]]") == 3
    assert text.count("[[alert]]") == 3
    grid = default_rules_toml(rfmx.SegmentMap.builtin("rfm-grid").order, overdue=3, spend_drop=0.25)
    assert '"Champions", "Loyal Customers", "Can\'t Lose Them"' in grid and "gt = 3" in grid and "lt = -0.25" in grid
    with pytest.raises(RfmxError, match="spend_drop is a share"):
        default_rules_toml(pymc, spend_drop=2)


def _orders(seed, weeks):
    rng = np.random.default_rng(seed)
    n = 60 * weeks
    t0 = np.datetime64("2022-01-03", "us").astype(np.int64)  # a Monday
    t = np.sort(t0 + (rng.random(n) * weeks * 7 * US_PER_DAY).astype(np.int64))
    amount = np.round(rng.lognormal(3, 1, n), 2)
    amount[rng.random(n) < 0.05] *= -1
    return pa.table({"customer_id": pa.array(rng.integers(0, 40, n) ** 2),
                     "order_time": pa.array(t, pa.int64()).view(pa.timestamp("us")),
                     "amount": pa.array(amount)})


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10**6), st.integers(20, 30), st.integers(2, 3))
def test_incremental_runs_report_what_a_full_recomputation_finds_once(tmp_path_factory, seed, weeks, step):
    """A state saved and extended week after week, one alert run after each fold: the alerts
    reported are exactly those of one recomputation over the whole history, each once."""
    orders = _orders(seed, weeks)
    t = orders.column("order_time").cast(pa.int64()).to_numpy()
    t0 = np.datetime64("2022-01-03", "us").astype(np.int64)
    week = (t - t0) // (7 * US_PER_DAY)
    path = tmp_path_factory.mktemp("alerts") / "state.arrow"
    first = weeks - 4 * step
    state = rfmx.build_state(orders.filter(pa.array(week < first)), state=TimelineState(period="week"))
    reported, start = [], None
    for end in range(first, weeks + 1, step):
        if end > first:
            state = TimelineState.load(path)
            state.update(orders.filter(pa.array((week >= end - step) & (week < end))))
        found, pairs, reason = run(state)
        if start is None:
            start = state.boundaries()[-2]  # the first run reports the last pair only
        if found is not None:
            reported += [(r["customer_id"], r["alert"], r["as_of_to"]) for r in found.to_pylist()]
        state.save(path)
    full = rfmx.build_state(orders, state=TimelineState(period="week"))
    everything, _, _ = run(full, start=start)
    expected = [(r["customer_id"], r["alert"], r["as_of_to"]) for r in everything.to_pylist()]
    assert expected  # (40 customers over weeks of random orders always give some)
    assert len(set(reported)) == len(reported)  # never twice
    assert sorted(reported) == sorted(expected)


def test_no_earlier_snapshot_is_said():
    state = rfmx.build_state(history([(1, "2022-01-05", 10), (2, "2022-01-07", 20)]),
                             state=TimelineState(period="month"))
    found, pairs, reason = run(state)
    assert found is None and "one snapshot" in reason and "alerts compare two" in reason
    again, _, reason = run(state)
    assert again is None and "reported the alerts up to 2022-02-01" in reason


class _Hook(http.server.BaseHTTPRequestHandler):
    answers: list = []
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        code = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    _Hook.answers, _Hook.received = [], []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


def test_webhook_retries_then_delivers(hook):
    _Hook.answers = [503, 502]
    table = pa.table({"customer_id": [1, 2], "alert": ["overdue", "moved down"]})
    post_alerts(hook, table, as_of="2023-08-01", backoff=0.01)
    assert len(_Hook.received) == 3
    assert _Hook.received[-1] == {"as_of": "2023-08-01", "alerts": [{"customer_id": 1, "alert": "overdue"},
                                                                   {"customer_id": 2, "alert": "moved down"}]}


def test_webhook_failures_are_one_line(hook):
    _Hook.answers = [500, 500, 500]
    table = pa.table({"customer_id": [1]})
    with pytest.raises(RfmxError, match=r"--webhook .*: cannot deliver 1 alert\(s\): HTTP 500 .*after 3 tries"):
        post_alerts(hook, table, as_of=None, backoff=0.01)
    _Hook.answers = [404]
    with pytest.raises(RfmxError, match=r"HTTP 404 .*after 1 try"):
        post_alerts(hook, table, as_of=None, backoff=0.01)
    with pytest.raises(RfmxError, match="cannot deliver"):
        post_alerts("http://127.0.0.1:9/x", table, as_of=None, tries=2, backoff=0.01)
    with pytest.raises(RfmxError, match="not an http"):
        post_alerts("ftp://x", table, as_of=None)


@pytest.fixture
def champion_file(tmp_path):
    path = tmp_path / "orders.parquet"
    pq.write_table(fading_champion(), path)
    return path


def test_cli_daily_style_runs(champion_file, tmp_path, hook):
    state, out = tmp_path / "s.arrow", tmp_path / "a.csv"
    r = run_cli("alerts", champion_file, "--every", "month", "--as-of", "2023-07-01", "--state-out", state, "-o", out)
    assert r.exit_code == 0, r.stderr
    # the next month: the champion is overdue; --exit-code says so; the webhook hears it
    r = run_cli("alerts", "--state-in", state, "--state-out", state, "--every", "month", "--as-of", "2023-08-01",
                "-o", out, "--exit-code", "--webhook", hook)
    assert r.exit_code == 3, r.stderr
    rows = pcsv.read_csv(out).to_pylist()
    assert any(x["customer_id"] == 1 and x["alert"] == "overdue" for x in rows)
    assert [a["customer_id"] for a in _Hook.received[-1]["alerts"]] == [x["customer_id"] for x in rows]
    assert "alert(s) from 1 month boundary pair(s) up to 2023-08-01" in r.stderr
    # run again for the same month: nothing new, exit 0 with --exit-code, an empty file
    r = run_cli("alerts", "--state-in", state, "--state-out", state, "--every", "month", "--as-of", "2023-08-01",
                "-o", out, "--exit-code")
    assert r.exit_code == 0 and "reported the alerts up to 2023-08-01" in r.stderr
    assert pcsv.read_csv(out).num_rows == 0


def test_cli_an_undelivered_webhook_keeps_the_state(champion_file, tmp_path):
    state = tmp_path / "s.arrow"
    assert run_cli("alerts", champion_file, "--every", "month", "--as-of", "2023-07-01",
                   "--state-out", state).exit_code == 0
    before = state.read_bytes()
    fails_cleanly(["alerts", "--state-in", state, "--state-out", state, "--every", "month", "--as-of", "2023-08-01",
                   "-o", tmp_path / "a.csv", "--webhook", "http://127.0.0.1:9/hook"],
                  r"--webhook http://127.0.0.1:9/hook: cannot deliver \d+ alert", tmp_path)
    assert state.read_bytes() == before


@pytest.mark.parametrize("args, pattern, code", [
    (["--rules", "R", "--overdue", "3"], r"--overdue and --spend-drop set the default rules", 2),
    (["--rules", "R"], r"alerts.toml line 3: alert 'x': unknown field 'spend'", 1),
    (["--spend-drop", "2"], r"Invalid value for '--spend-drop'", 2),
    (["--every", "week"], r"the timeline state has one bucket per month", 1),
])
def test_cli_bad_options(champion_file, tmp_path, args, pattern, code):
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[alert]]\nname = "x"\nspend = { gt = 1 }\n')
    state = tmp_path / "s.arrow"
    if "--every" in args:
        assert run_cli("alerts", champion_file, "--every", "month", "--state-out", state).exit_code == 0
        source = ["--state-in", state]
    else:
        source = [champion_file, "--every", "month"]
    args = [rules if a == "R" else a for a in args]
    fails_cleanly(["alerts", *source, *args, "-o", tmp_path / "a.csv"], pattern, tmp_path, exit_code=code)
