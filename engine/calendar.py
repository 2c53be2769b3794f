"""Calendar days in a time zone: which day an instant falls on, and when a day starts.

rfmx keeps order times as instants (int64 microseconds since the Unix epoch, UTC), so
states merge and compare whatever zone their input was written in.  Days are a matter of
the business's calendar: an order at 23:30 in Tokyo is on that Tokyo day, not on the UTC
day before.  A state therefore carries one IANA time zone (default ``UTC``) that decides

- which calendar day an instant falls on (recency and tenure count whole calendar days
  between the day of the order and the ``as_of`` day; BTYD purchase periods are local
  days, weeks and months);
- what a time without a zone means: naive timestamps, dates and ISO strings without an
  offset in the input, and bare ``as_of``/``since`` dates, are wall-clock times there.

A wall-clock time that occurs twice (the hour a clock goes back) is taken as the earlier
instant; one that does not occur (the hour a clock skips) as the first instant after the
gap.  The conversions use Arrow's time-zone kernels (the system's tz database); in UTC they
are the identity and cost nothing.
"""
from __future__ import annotations

import numpy as np

from .errors import RfmxError

__all__ = ["UTC", "US_PER_DAY", "WEEKDAYS", "check_timezone", "wall_to_instant", "instant_to_wall", "local_days",
           "local_day", "day_start"]

UTC = "UTC"
US_PER_DAY = 86_400_000_000
#: weekday names, Monday first: what a week may start on
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def check_timezone(name) -> str:
    """``name`` if it is a time zone Arrow and Python both know (IANA name or ``UTC``), else a one-line error."""
    if name is None:
        return UTC
    if not isinstance(name, str) or not name.strip():
        raise RfmxError(f"timezone must be an IANA time zone name such as 'Europe/Berlin', got {name!r}")
    name = name.strip()
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise RfmxError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or 'Asia/Tokyo'") \
            from None
    return name


def wall_to_instant(wall_us: np.ndarray, timezone: str) -> np.ndarray:
    """Wall-clock microseconds in ``timezone`` → instants (UTC microseconds)."""
    if timezone == UTC or len(wall_us) == 0:
        return wall_us
    import pyarrow as pa
    import pyarrow.compute as pc

    naive = pa.array(wall_us, type=pa.int64()).view(pa.timestamp("us"))
    zoned = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="latest")
    return np.asarray(zoned.view(pa.int64()))


def instant_to_wall(instant_us: np.ndarray, timezone: str) -> np.ndarray:
    """Instants (UTC microseconds) → wall-clock microseconds in ``timezone``."""
    if timezone == UTC or len(instant_us) == 0:
        return instant_us
    import pyarrow as pa
    import pyarrow.compute as pc

    zoned = pa.array(instant_us, type=pa.int64()).view(pa.timestamp("us", tz=timezone))
    return np.asarray(pc.local_timestamp(zoned).view(pa.int64()))


def local_days(instant_us: np.ndarray, timezone: str) -> np.ndarray:
    """The calendar day (days since 1970-01-01 in ``timezone``) each instant falls on."""
    return np.floor_divide(instant_to_wall(np.asarray(instant_us, dtype=np.int64), timezone), US_PER_DAY)


def local_day(instant_us: int, timezone: str) -> int:
    """:func:`local_days` of one instant."""
    return int(local_days(np.array([instant_us], dtype=np.int64), timezone)[0])


def day_start(day: int, timezone: str) -> int:
    """The first instant of calendar day ``day`` (days since 1970-01-01) in ``timezone``."""
    return int(wall_to_instant(np.array([day * US_PER_DAY], dtype=np.int64), timezone)[0])
