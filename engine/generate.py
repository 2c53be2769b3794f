"""A realistic synthetic order history, deterministic by seed, for the demo, tests and benchmarks.

Shape of the data (every knob is a parameter):

- customers join at a uniform random day and stay active for an exponentially distributed
  lifetime, so recency and tenure spread the way real bases do (``shape="churn"``, the
  default); with ``shape="even"`` every customer orders across the whole history, so each
  part of the file holds almost every customer (no locality of customers in time);
- orders per customer follow a power law: every customer has at least one order, a few
  have hundreds (``alpha`` sets the tail);
- an order has one or more lines (same customer, order id and time); line amounts are
  lognormal and rounded to cents;
- a share of orders gets a refund line later (a negative amount, same order id);
- rows are sorted by time, as an order export is; order ids grow with time;
- customer ids are unique int64 values scattered over a 40-bit range (not 0..n-1), or
  strings like ``cus-123456789012``;
- with ``shops``, a marketplace: shop sizes follow a power law (Zipf weights ``1/rank^1.1``
  on shop popularity); each customer has one to four relationships with shops drawn by
  popularity, and each order goes to one of its customer's shops (all lines and the
  refund of an order to the same shop), so customers buy from several shops.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .columns import US_PER_DAY
from .errors import RfmxError
from .state import to_us

__all__ = ["generate_orders", "write_orders", "SHAPES"]

#: how customers spread over time: join-and-lapse, or all active from start to end
SHAPES = ("churn", "even")

_MIX = np.uint64(0x9E3779B97F4A7C15)
_ID_BITS = 40


def _customer_ids(n_customers: int, string_ids: bool) -> pa.Array:
    k = np.arange(n_customers, dtype=np.uint64)
    # An odd multiplier is a bijection modulo 2**40: unique ids that look random.
    ids = ((k * _MIX) & np.uint64((1 << _ID_BITS) - 1)).astype(np.int64) + 10**12
    if not string_ids:
        return pa.array(ids)
    import pyarrow.compute as pc

    return pc.binary_join_element_wise("cus-", pa.array(ids).cast(pa.string()), "")


def generate_orders(n_rows: int = 1_000_000, *, customers: int | None = None, seed: int = 0,
                    start="2024-01-01", days: int = 730, string_ids: bool = False,
                    refund_rate: float = 0.02, lines_per_order: float = 1.33, alpha: float = 2.0,
                    mean_lifetime_days: float = 365.0, decimal_amounts: bool = False, shape: str = "churn",
                    shops: int | None = None, cost_share: float | None = None):
    """Yield the order history as ``pyarrow.RecordBatch`` es of at most 2**20 rows.

    Columns: ``customer_id`` (int64, or string with ``string_ids``), ``order_id`` (int64),
    ``order_time`` (timestamp[us]), ``amount`` (float64 or decimal(12, 2); refunds < 0).
    Exactly ``n_rows`` rows; ``customers`` defaults to ``n_rows / 13.8`` (the ratio of the
    reference 1e8-row history with 7.25 M customers).  ``shape`` is ``"churn"`` (customers
    join and lapse: each is active over a random part of the history) or ``"even"`` (every
    customer is active over the whole history).  ``shops``: add a ``shop_id`` column (int64,
    1..shops) of a marketplace with power-law shop sizes (see the module docstring).
    ``cost_share`` adds a ``cost`` column (the
    amount's type): each line's cost is a random 100 * (share ± 0.2) % of its amount; a
    refund line's cost is negative (goods returned) for half the refunds and 0 (written
    off) for the rest.  The other columns do not change with it.
    """
    if cost_share is not None and not 0 <= cost_share <= 2:
        raise RfmxError(f"cost_share must be between 0 and 2, got {cost_share}")
    if shape not in SHAPES:
        raise RfmxError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if n_rows < 1:
        raise RfmxError(f"rows must be >= 1, got {n_rows}")
    if lines_per_order < 1:
        raise RfmxError(f"lines_per_order must be >= 1, got {lines_per_order}")
    if shops is not None and shops < 1:
        raise RfmxError(f"shops must be >= 1, got {shops}")
    rng = np.random.default_rng(seed)
    n_refunds = int(round(refund_rate * n_rows / (lines_per_order + refund_rate)))
    n_lines = n_rows - n_refunds
    n_orders = max(1, int(round(n_lines / lines_per_order)))
    n_customers = int(customers) if customers else max(1, int(round(n_rows / 13.8)))
    n_customers = min(n_customers, n_orders)
    n_refunds = min(n_refunds, n_orders)
    n_lines = n_rows - n_refunds

    # Orders per customer: 1 each, the rest spread by power-law weights.
    weights = rng.pareto(alpha, n_customers) + 0.05
    extra = rng.multinomial(n_orders - n_customers, weights / weights.sum()) if n_orders > n_customers \
        else np.zeros(n_customers, dtype=np.int64)
    orders_per_customer = 1 + extra

    # Each customer is active over [birth, birth + lifetime] clipped to the period.
    span_us = days * US_PER_DAY
    if shape == "churn":
        birth = rng.random(n_customers) * span_us
        life = np.minimum(rng.exponential(mean_lifetime_days * US_PER_DAY, n_customers), span_us - birth)
    else:
        birth = np.zeros(n_customers)
        life = np.full(n_customers, float(span_us))
    order_customer = np.repeat(np.arange(n_customers, dtype=np.int32), orders_per_customer)
    del extra, weights
    t0 = to_us(start)
    order_time = (birth[order_customer] + rng.random(n_orders) * life[order_customer]).astype(np.int64)
    del birth, life
    order_time -= order_time % 1_000_000  # whole seconds, as exports usually have
    order_time += t0
    by_time = np.argsort(order_time, kind="stable")
    order_time = order_time[by_time]
    order_customer = order_customer[by_time]
    del by_time

    # Lines per order: 1 + extra lines spread at random, so the total is exactly n_lines.
    lines = 1 + np.bincount(rng.integers(0, n_orders, n_lines - n_orders), minlength=n_orders) \
        if n_lines > n_orders else np.ones(n_orders, dtype=np.int64)
    line_order = np.repeat(np.arange(n_orders, dtype=np.int64), lines)
    del lines
    line_amount = np.maximum(np.round(rng.lognormal(3.0, 0.9, n_lines), 2), 0.5)

    # Refunds: a later line of a random order with a negative share of a line's amount.
    refunded = np.sort(rng.choice(n_orders, size=n_refunds, replace=False)) if n_refunds else np.empty(0, np.int64)
    end_us = t0 + span_us
    refund_time = np.minimum(order_time[refunded] + rng.integers(1, 31, n_refunds) * US_PER_DAY, end_us - 1_000_000)
    refund_amount = -np.round(rng.uniform(0.2, 1.0, n_refunds) * np.exp(rng.normal(3.0, 0.9, n_refunds)), 2)
    by_refund_time = np.argsort(refund_time, kind="stable")
    refunded, refund_time, refund_amount = refunded[by_refund_time], refund_time[by_refund_time], refund_amount[by_refund_time]

    # Merge the refunds into the time-sorted lines without another full sort.
    line_time = order_time[line_order]
    slot = np.searchsorted(line_time, refund_time, side="right") + np.arange(n_refunds)
    is_refund = np.zeros(n_rows, dtype=bool)
    is_refund[slot] = True
    row_order = np.empty(n_rows, dtype=np.int64)
    row_order[~is_refund] = line_order
    row_order[slot] = refunded
    row_time = np.empty(n_rows, dtype=np.int64)
    row_time[~is_refund] = line_time
    row_time[slot] = refund_time
    row_amount = np.empty(n_rows, dtype=np.float64)
    row_amount[~is_refund] = line_amount
    row_amount[slot] = refund_amount
    del line_order, line_time, line_amount, is_refund
    row_customer = order_customer[row_order]
    del order_customer

    row_cost = None
    if cost_share is not None:
        crng = np.random.default_rng([seed, 1])  # a stream of its own: the other columns stay as without costs
        share = np.clip(crng.uniform(cost_share - 0.2, cost_share + 0.2, n_rows), 0.0, None)
        share[(row_amount < 0) & (crng.random(n_rows) < 0.5)] = 0.0
        row_cost = np.round(row_amount * share, 2)
    ids = _customer_ids(n_customers, string_ids)
    amount_type = pa.decimal128(12, 2) if decimal_amounts else pa.float64()
    step = 1 << 20
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        amount = pa.array(row_amount[lo:hi])
        if decimal_amounts:
            amount = amount.cast(amount_type)
        columns = {
            "customer_id": ids.take(pa.array(row_customer[lo:hi])),
            "order_id": pa.array(row_order[lo:hi] + 1_000_000),
            "order_time": pa.array(row_time[lo:hi]).view(pa.timestamp("us")),
            "amount": amount,
        }
        if shops:
            columns["shop_id"] = pa.array(shop_of_orders(row_customer[lo:hi], row_order[lo:hi], shops, seed))
        if row_cost is not None:
            columns["cost"] = pa.array(row_cost[lo:hi]).cast(amount_type)
        yield pa.record_batch(columns)


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash (splitmix64's finalizer) of uint64 values."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shop_of_orders(customer: np.ndarray, order: np.ndarray, shops: int, seed: int = 0) -> np.ndarray:
    """The shop (1..shops) of each order line, from its customer index and order number.

    Customer ``c`` has ``1 + hash(c) % 4`` relationships; relationship ``r`` is with the shop
    at ``hash(c, r)`` on the popularity CDF (Zipf weights ``1/rank^1.1``: a few large shops,
    many small ones); an order goes to relationship ``hash(order) % relationships``.
    Deterministic, and computed per batch without state.
    """
    weights = 1.0 / np.arange(1, shops + 1, dtype=np.float64) ** 1.1
    cdf = np.cumsum(weights) / weights.sum()
    with np.errstate(over="ignore"):
        salt = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        c = customer.astype(np.uint64) + salt
        k = np.uint64(1) + _mix(c) % np.uint64(4)
        r = _mix(order.astype(np.uint64) ^ np.uint64(0xD1B54A32D192ED03)) % k
        u = (_mix(c * np.uint64(8) + r + np.uint64(1)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.minimum(np.searchsorted(cdf, u, side="right"), shops - 1).astype(np.int64) + 1


def write_orders(path, n_rows: int = 1_000_000, *, files: int = 1, progress: bool = False, **options) -> list[str]:
    """Generate an order history and write it to ``path`` (.parquet, .csv, .arrow/.feather).

    With ``files > 1``, ``path`` is a directory that receives ``part-00000.parquet`` ... of
    consecutive time ranges.  Files appear whole (temporary file, then rename).  Returns the
    paths written.
    """
    import os
    from pathlib import Path

    from .progress import Progress
    from .sinks import atomic_path, output_format

    path = Path(path)
    if files > 1:
        path.mkdir(parents=True, exist_ok=True)
        targets = [path / f"part-{i:05d}.parquet" for i in range(files)]
    else:
        targets = [path]
    fmt = output_format(targets[0])
    batches = generate_orders(n_rows, **options)
    per_file = -(-n_rows // len(targets))
    written = []
    with Progress(progress, label="rfmx generate", total=n_rows) as bar:
        pending = None
        for target in targets:
            with atomic_path(target) as tmp:
                writer = None
                rows = 0
                try:
                    while rows < per_file:
                        batch = pending if pending is not None else next(batches, None)
                        pending = None
                        if batch is None:
                            break
                        if rows + batch.num_rows > per_file:
                            pending = batch.slice(per_file - rows)
                            batch = batch.slice(0, per_file - rows)
                        if writer is None:
                            writer = _writer(fmt, tmp, batch.schema)
                        writer.write_batch(batch)
                        rows += batch.num_rows
                        bar.advance(batch.num_rows)
                finally:
                    if writer is not None:
                        writer.close()
            written.append(os.fspath(target))
    return written


def _writer(fmt: str, path, schema: pa.Schema):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(str(path), schema, compression="snappy")
    if fmt == "csv":
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(str(path), schema)
    return pa.ipc.new_file(str(path), schema)
