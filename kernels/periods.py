"""Calendar periods of wall-clock times: days, weeks (any first weekday), months, quarters.

The neutral home of the period arithmetic that the BTYD summary (:mod:`rfmx.kernels.btyd`)
and the timeline state (:mod:`rfmx.kernels.timeline`) share.  Inputs are wall-clock
microseconds (the caller converts instants with ``rfmx.calendar.instant_to_wall``), so a
period is the business's local day, week, month or quarter.

Periods are integers counted from the one that holds 1970-01-01 (negative before it):

====================  =========================================================
``period_kind`` 0     days since 1970-01-01
``period_kind`` 1     weeks; ``period_kind = 1 | week_start << 3`` for weeks that
                      start on weekday ``week_start`` (0 = Monday ... 6 = Sunday),
                      so plain ``1`` is Monday weeks (pandas' ``W-SUN`` periods)
``period_kind`` 2     calendar months since 1970-01
``period_kind`` 3     calendar quarters (Jan-Mar, ...) since 1970-Q1
====================  =========================================================
"""
from __future__ import annotations

from numba import prange

from ._policy import kernel

__all__ = ["PERIOD_KINDS", "WEEKDAYS", "US_PER_DAY", "period_kind", "period_of", "periods_of", "period_start_us",
           "period_starts_us"]

#: period name -> base ``period_kind`` (weeks: Monday weeks; see :func:`period_kind`).
PERIOD_KINDS = {"day": 0, "week": 1, "month": 2, "quarter": 3}
#: weekday names, Monday first (the ``week_start`` numbers).
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
US_PER_DAY = 86_400_000_000


def period_kind(period: str, week_start: int = 0) -> int:
    """The ``period_kind`` argument of the kernels for a period name (and a week's first weekday)."""
    kind = PERIOD_KINDS[period]
    return kind | (int(week_start) << 3) if kind == 1 else kind


@kernel(inline=True)
def _month_of_day(d):
    # civil-from-days (H. Hinnant): the calendar month of day d, months since 1970-01
    z = d + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return (y - 1970) * 12 + (m - 1)


@kernel(inline=True)
def _day_of_month(month):
    # days-from-civil for the 1st of ``month`` (months since 1970-01)
    y = 1970 + month // 12
    m = month - (y - 1970) * 12 + 1
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m + 9 if m <= 2 else m - 3
    doy = (153 * mp + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@kernel(inline=True)
def period_of(time_us, period_kind):
    """The period index of a wall-clock time (int64 microseconds since 1970-01-01T00:00)."""
    d = time_us // US_PER_DAY  # floor division: days before 1970 stay on their own day
    base = period_kind & 7
    if base == 0:
        return d
    if base == 1:
        return (d + 3 - (period_kind >> 3)) // 7  # 1970-01-01 is a Thursday (weekday 3)
    if base == 2:
        return _month_of_day(d)
    return _month_of_day(d) // 3


@kernel(parallel=True)
def periods_of(time_us, period_kind, out):
    """``out[i] = period_of(time_us[i], period_kind)``."""
    for i in prange(time_us.shape[0]):
        out[i] = period_of(time_us[i], period_kind)


@kernel(inline=True)
def _period_start(period, period_kind):
    base = period_kind & 7
    if base == 0:
        return period * US_PER_DAY
    if base == 1:
        return (period * 7 - 3 + (period_kind >> 3)) * US_PER_DAY
    if base == 2:
        return _day_of_month(period) * US_PER_DAY
    return _day_of_month(period * 3) * US_PER_DAY


@kernel
def period_start_us(period, period_kind):
    """The first wall-clock instant (microseconds) of a period index."""
    return _period_start(period, period_kind)


@kernel(parallel=True)
def period_starts_us(periods, period_kind, out):
    """``out[i] = period_start_us(periods[i], period_kind)``."""
    for i in prange(periods.shape[0]):
        out[i] = _period_start(periods[i], period_kind)
