"""Slow, obviously correct references for rfmx's per-customer aggregates (plain Python).

Definitions (docs/CONTRIBUTING.md and the docstrings of engine/state.py, kernels/rfm.py,
engine/columns.py):

- times are integer microseconds since the Unix epoch: a timestamp of unit ``s``/``ms``/``us``
  is scaled exactly, ``ns`` is floor-divided by 1000; zoned timestamps are their UTC
  instant, naive ones are taken as they are; a date is midnight at its start; an ISO-8601
  string with a zone offset is its UTC instant, without one it is taken as it is;
- money is integer minor units at ``amount_scale`` decimals: integers are whole units,
  floats are ``np.rint(value * 10**scale)`` (half to even), decimals are rescaled exactly;
- the window is ``[since, as_of)``; a line with a null customer, time, amount (or order id,
  when there is an order-id column) is dropped (``on_null="skip"``);
- ``as_of`` defaults to the midnight after the latest kept line (order or refund);
- a line with a negative amount is a refund: it counts in ``n_refunds`` and
  ``refunds_minor`` and never moves ``first_order``/``last_order`` nor ``n_orders``;
- without order ids every non-refund line is one order; with order ids a non-refund line
  starts a new order when its id differs from the previous non-refund line of the same
  customer (input order);
- with a cost column, a line's cost (money, converted as the amount) is the line's: it
  adds to its customer's cost total whatever the line's sign (a refund line's negative
  cost is goods coming back); gross profit = net money - cost total (minor units); margin
  rate = profit / net money (None when net money is 0); refund rate = refund lines /
  orders (None without orders); refund money rate = |refund money| / gross money (None
  when gross money is 0);
- ``recency_days`` and ``tenure_days``: calendar days (UTC dates, by Python's ``datetime``)
  from the date of the last / first order to the date of ``as_of``, null for a customer
  without orders.

Everything here is per line, in Python integers; nothing is vectorised or clever.
"""
from __future__ import annotations

import datetime as dt
import decimal

import numpy as np

US_PER_DAY = 86_400 * 1_000_000
US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


# --- conversions ------------------------------------------------------------------------

def timestamp_to_us(raw: int, unit: str) -> int:
    """A timestamp's stored integer in ``unit`` as microseconds (``ns`` floors)."""
    if unit == "ns":
        return raw // 1000
    return raw * US_PER_UNIT[unit]


def date32_to_us(days: int) -> int:
    return days * US_PER_DAY


def date64_to_us(ms: int) -> int:
    return ms * 1000


def iso_to_us(text: str) -> int:
    """An ISO-8601 string as microseconds: with an offset its UTC instant, else as it is."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        return (value - _EPOCH_UTC) // dt.timedelta(microseconds=1)
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def datetime_to_us(value: dt.datetime | dt.date) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return (value - _EPOCH_UTC) // dt.timedelta(microseconds=1)
        return (value - _EPOCH) // dt.timedelta(microseconds=1)
    return (value - _EPOCH.date()).days * US_PER_DAY


def amount_to_minor(value, scale: int) -> int:
    """One amount (Python int, float or Decimal) as integer minor units."""
    if isinstance(value, bool):
        raise TypeError("bool is not an amount")
    if isinstance(value, int):
        return value * 10**scale
    if isinstance(value, float):
        return int(np.rint(value * 10**scale))
    if isinstance(value, decimal.Decimal):
        with decimal.localcontext() as ctx:
            ctx.prec = 100
            scaled = value.scaleb(scale)
            assert scaled == scaled.to_integral_value(), f"{value} has more than {scale} decimals"
            return int(scaled)
    raise TypeError(f"not an amount: {value!r}")


def default_as_of(times_us) -> int | None:
    """Midnight after the latest time (None without any)."""
    times_us = list(times_us)
    if not times_us:
        return None
    return (max(times_us) // US_PER_DAY + 1) * US_PER_DAY


# --- the aggregate ------------------------------------------------------------------------

class Customer:
    """One customer's aggregate, built line by line."""

    def __init__(self):
        self.first_order_us = None
        self.last_order_us = None
        self.n_orders = 0
        self.n_refunds = 0
        self.gross_minor = 0
        self.refunds_minor = 0
        self.first_order_id = None
        self.last_order_id = None
        self.cost_minor = 0

    def add(self, time_us: int, amount_minor: int, order_id, has_order_id: bool, cost_minor: int = 0) -> None:
        self.cost_minor += cost_minor
        if amount_minor < 0:
            self.n_refunds += 1
            self.refunds_minor += amount_minor
            return
        self.gross_minor += amount_minor
        if not has_order_id:
            self.n_orders += 1
        else:
            if self.n_orders == 0:
                self.n_orders = 1
                self.first_order_id = order_id
            elif order_id != self.last_order_id:
                self.n_orders += 1
            self.last_order_id = order_id
        if self.first_order_us is None or time_us < self.first_order_us:
            self.first_order_us = time_us
        if self.last_order_us is None or time_us > self.last_order_us:
            self.last_order_us = time_us


def naive_customers(customers, times_us, amounts_minor, order_ids=None, *, since_us=None,
                    as_of_us=None, costs_minor=None) -> tuple[dict, int | None]:
    """Per-customer :class:`Customer` of the lines in ``[since, as_of)``, and the as_of used.

    Lines with a ``None`` in any column are dropped.  ``order_ids`` None means no order-id
    column.  ``as_of_us`` None means the default (midnight after the latest kept line).
    ``costs_minor``: each line's cost (None: no cost column; a None cost drops the line).
    """
    has_oid = order_ids is not None
    n = len(customers)
    oids = order_ids if has_oid else [0] * n
    costs = costs_minor if costs_minor is not None else [0] * n
    kept = []
    for c, t, a, o, k in zip(customers, times_us, amounts_minor, oids, costs):
        if c is None or t is None or a is None or o is None or k is None:
            continue
        if since_us is not None and t < since_us:
            continue
        if as_of_us is not None and t >= as_of_us:
            continue
        kept.append((c, t, a, o, k))
    if as_of_us is None:
        as_of_us = default_as_of(t for _, t, _, _, _ in kept)
    out: dict = {}
    for c, t, a, o, k in kept:
        out.setdefault(c, Customer()).add(t, a, o, has_oid, k)
    return out, as_of_us


def naive_profit(customers, times_us, amounts_minor, costs_minor, order_ids=None, *, since_us=None,
                 as_of_us=None, amount_scale: int = 2) -> dict:
    """``{customer_id: {column: value}}`` with the profit columns a cost column adds
    (``rfmx.state.PROFIT_COLUMNS``), by the rules in this module's docstring."""
    cust, _ = naive_customers(customers, times_us, amounts_minor, order_ids, since_us=since_us,
                              as_of_us=as_of_us, costs_minor=costs_minor)
    unit = 10 ** amount_scale
    rows = {}
    for key, cu in cust.items():
        net = cu.gross_minor + cu.refunds_minor
        profit = net - cu.cost_minor
        rows[key] = {
            "cost_total": cu.cost_minor / unit,
            "profit_total": profit / unit,
            "profit_minor": profit,
            "margin_rate": profit / net if net else None,
            "refund_rate": cu.n_refunds / cu.n_orders if cu.n_orders else None,
            "refund_money_rate": abs(cu.refunds_minor / unit) / (cu.gross_minor / unit) if cu.gross_minor else None,
        }
    return rows


def finalize_rows(customers: dict, as_of_us: int | None, amount_scale: int = 2) -> dict:
    """``{customer_id: {column: value}}`` with the columns of ``RFMState.finalize``.

    Times stay integer microseconds; the float columns are what an exact decimal would
    give rounded once to float64 (Python int / int true division).
    """
    unit = 10**amount_scale
    rows = {}
    for key, cu in customers.items():
        has = cu.n_orders > 0
        net = cu.gross_minor + cu.refunds_minor
        rows[key] = {
            "first_order": cu.first_order_us if has else None,
            "last_order": cu.last_order_us if has else None,
            "recency_days": calendar_days(cu.last_order_us, as_of_us) if has else None,
            "tenure_days": calendar_days(cu.first_order_us, as_of_us) if has else None,
            "n_orders": cu.n_orders,
            "n_refunds": cu.n_refunds,
            "monetary_total": net / unit,
            "monetary_minor": net,
            "avg_order_value": (net / unit) / cu.n_orders if has else None,
            "gross_total": cu.gross_minor / unit,
            "refunds_total": cu.refunds_minor / unit,
        }
    return rows


def calendar_days(from_us: int, to_us: int) -> int:
    """Days between the UTC calendar dates of two instants (microseconds since the epoch)."""
    import datetime as dt

    epoch = dt.datetime(1970, 1, 1)
    return ((epoch + dt.timedelta(microseconds=to_us)).date() - (epoch + dt.timedelta(microseconds=from_us)).date()).days


def naive_rfm(customers, times_us, amounts_minor, order_ids=None, *, since_us=None, as_of_us=None,
              amount_scale: int = 2) -> tuple[dict, int | None]:
    """The finalized per-customer table as a dict (see :func:`finalize_rows`), and as_of."""
    cust, as_of = naive_customers(customers, times_us, amounts_minor, order_ids,
                                  since_us=since_us, as_of_us=as_of_us)
    return finalize_rows(cust, as_of, amount_scale), as_of


def naive_kernel_rows(codes, times_us, amounts_minor, order_ids, n_customers: int) -> list[list[int]]:
    """The raw aggregate rows ``rfm_update`` builds, in the field order of ``kernels.rfm.FIELDS``.

    A customer without orders keeps the identities (first = int64 max, last = int64 min,
    order ids 0); without order ids the order-id fields stay 0.
    """
    has_oid = len(order_ids) > 0
    cust = [Customer() for _ in range(n_customers)]
    for i, c in enumerate(codes):
        if c < 0:
            continue
        cust[c].add(times_us[i], amounts_minor[i], order_ids[i] if has_oid else 0, has_oid)
    rows = []
    for cu in cust:
        rows.append([
            I64_MAX if cu.first_order_us is None else cu.first_order_us,
            I64_MIN if cu.last_order_us is None else cu.last_order_us,
            cu.n_orders,
            cu.n_refunds,
            cu.gross_minor,
            cu.refunds_minor,
            cu.first_order_id if has_oid and cu.first_order_id is not None else 0,
            cu.last_order_id if has_oid and cu.last_order_id is not None else 0,
        ])
    return rows


# --- reading rfmx's output into the same shape ------------------------------------------

RESULT_COLUMNS = ["customer_id", "first_order", "last_order", "recency_days", "tenure_days", "n_orders",
                  "n_refunds", "monetary_total", "monetary_minor", "avg_order_value", "gross_total",
                  "refunds_total"]


def result_rows(table) -> dict:
    """An rfmx result table as ``{customer_id: {column: value}}`` (times as int microseconds).

    Fails if a customer id appears twice: two rows for one customer is a wrong answer.
    """
    import pyarrow as pa

    assert table.column_names == RESULT_COLUMNS, table.column_names
    cols = {}
    for name in RESULT_COLUMNS:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols[name] = col.to_pylist()
    out = {}
    for i, key in enumerate(cols["customer_id"]):
        assert key not in out, f"customer {key!r} appears twice"
        out[key] = {name: cols[name][i] for name in RESULT_COLUMNS[1:]}
    return out


# --- the timeline: per-(customer, period) buckets ----------------------------------------

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def local_date(instant_us: int, timezone: str) -> dt.date:
    """The calendar date an instant falls on in ``timezone`` (Python's zoneinfo)."""
    import zoneinfo

    utc = _EPOCH_UTC + dt.timedelta(microseconds=instant_us)
    return utc.astimezone(zoneinfo.ZoneInfo(timezone)).date()


def period_start_date(day: dt.date, period: str, week_start: str = "monday") -> dt.date:
    """The first date of the day/week/month/quarter holding ``day`` (weeks start on ``week_start``)."""
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=(day.weekday() - WEEKDAYS.index(week_start)) % 7)
    if period == "month":
        return day.replace(day=1)
    assert period == "quarter", period
    return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def naive_buckets(customers, times_us, amounts_minor, order_ids=None, *, period: str, week_start: str = "monday",
                  timezone: str = "UTC", since_us=None, as_of_us=None) -> dict:
    """``{(customer, first date of the period): Customer}``: each customer's lines of each
    calendar period (local dates in ``timezone``), folded line by line in input order as
    :class:`Customer` does (lines outside ``[since, as_of)`` or with a None dropped)."""
    has_oid = order_ids is not None
    oids = order_ids if has_oid else [0] * len(customers)
    out: dict = {}
    for c, t, a, o in zip(customers, times_us, amounts_minor, oids):
        if c is None or t is None or a is None or o is None:
            continue
        if (since_us is not None and t < since_us) or (as_of_us is not None and t >= as_of_us):
            continue
        key = (c, period_start_date(local_date(t, timezone), period, week_start))
        out.setdefault(key, Customer()).add(t, a, o, has_oid)
    return out


def pandas_snapshot(orders, as_of):
    """The per-customer aggregates as of ``as_of`` the way a pandas user writes them: keep
    the lines before ``as_of``, group by customer.  ``orders``: a pandas DataFrame with
    ``customer_id``, ``order_time`` (tz-aware UTC) and ``amount_minor``; ``as_of`` a
    tz-aware UTC Timestamp.  Recency and tenure in UTC calendar days.  Returns a DataFrame
    indexed by customer with ``recency_days``, ``tenure_days``, ``n_orders``,
    ``n_refunds``, ``monetary_minor``."""
    df = orders[orders.order_time < as_of]
    is_order = df.amount_minor >= 0
    order_time = df.order_time.where(is_order)
    day = as_of.normalize()
    per = df.assign(is_order=is_order, is_refund=~is_order, order_time=order_time).groupby("customer_id").agg(
        last=("order_time", "max"), first=("order_time", "min"), n_orders=("is_order", "sum"),
        n_refunds=("is_refund", "sum"), monetary_minor=("amount_minor", "sum"))
    per["recency_days"] = (day - per["last"].dt.normalize()).dt.days
    per["tenure_days"] = (day - per["first"].dt.normalize()).dt.days
    return per[["recency_days", "tenure_days", "n_orders", "n_refunds", "monetary_minor"]]


def orders_from_lines(lines):
    """An order table from ``(customer, 'YYYY-MM-DD', amount)`` triples: hand-built histories."""
    import pyarrow as pa

    return pa.table({
        "customer_id": pa.array([c for c, _, _ in lines], pa.int64()),
        "order_time": pa.array([dt.datetime.fromisoformat(d) for _, d, _ in lines], pa.timestamp("us")),
        "amount": pa.array([float(a) for _, _, a in lines]),
    })
