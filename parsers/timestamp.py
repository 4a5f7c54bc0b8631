"""RFC 3339 timestamps from container runtimes, normalised to UTC without losing digits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# Runtimes write RFC 3339 with 0-9 fractional digits (Go's RFC3339Nano trims trailing zeros).
_UTC = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")
_ANY = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d{1,9})?([Zz]|([+-])(\d\d):(\d\d))"
)
_utc_match = _UTC.fullmatch
utc_time_match = _utc_match  # a time already as normalize_time returns it, or None


def normalize_time(raw: bytes) -> bytes | None:
    """Return `raw` as a UTC RFC 3339 timestamp ending in Z with every fractional digit kept.

    None when `raw` is not an RFC 3339 date-time (or names an impossible date).
    """
    if _utc_match(raw) is not None:
        # The common case: already UTC; the calendar check below is skipped for speed,
        # Elasticsearch rejects impossible dates and the document then goes to dead letters.
        return raw
    m = _ANY.fullmatch(raw)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction = m.group(7) or b""
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    if m.group(9) is not None:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if offset >= timedelta(hours=24):
            return None
        try:
            moment = moment - offset if m.group(9) == b"+" else moment + offset
        except OverflowError:
            return None
    head = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return head.encode() + fraction + b"Z"
