"""Per-container rate limits: token buckets with an injected clock, and where limits come from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.events import LogEvent
from shipper.config import parse_config
from shipper.limits import (
    UNLIMITED,
    ContainerLimiter,
    LimitOverride,
    LimitPolicy,
    RateLimit,
    parse_rate_limit,
)


def events(count: int, size: int = 10) -> list[LogEvent]:
    return [LogEvent(b"t", b"stdout", b"x" * size, i * (size + 1)) for i in range(count)]


def test_no_limit_keeps_the_very_same_chunk():
    chunk = events(1000)
    limiter = ContainerLimiter(RateLimit(), now=0.0)
    assert limiter.keep(chunk, 0.0) is chunk
    assert limiter.dropped_events == 0


def test_lines_over_the_burst_are_dropped_and_counted_then_the_bucket_refills():
    limiter = ContainerLimiter(RateLimit(lines_per_second=10, burst_lines=20), now=100.0)
    kept = limiter.keep(events(25), 100.0)
    assert len(kept) == 20
    assert (limiter.dropped_events, limiter.dropped_bytes) == (5, 50)
    assert limiter.keep(events(5), 100.0) == []  # nothing refilled yet
    assert len(limiter.keep(events(10), 100.5)) == 5  # half a second: 5 tokens
    assert limiter.dropped_events == 15


def test_the_burst_defaults_to_one_seconds_worth():
    limiter = ContainerLimiter(RateLimit(lines_per_second=7), now=0.0)
    assert len(limiter.keep(events(10), 0.0)) == 7


def test_bytes_are_limited_by_message_size():
    limiter = ContainerLimiter(RateLimit(bytes_per_second=100), now=0.0)
    assert len(limiter.keep(events(20, size=10), 0.0)) == 10
    assert limiter.dropped_bytes == 100
    assert limiter.allow(100, 1.0) and not limiter.allow(1, 1.0)


def test_an_event_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_a_debt():
    limiter = ContainerLimiter(RateLimit(bytes_per_second=100), now=0.0)
    assert limiter.allow(250, 0.0)  # full bucket: it goes, 150 bytes in debt
    assert not limiter.allow(1, 1.0)  # one second refills 100: still 50 short
    assert limiter.allow(1, 1.6)


def test_a_slow_rate_still_lets_whole_lines_through():
    limiter = ContainerLimiter(RateLimit(lines_per_second=0.5), now=0.0)
    assert limiter.allow(10, 0.0) and not limiter.allow(10, 1.0)
    assert limiter.allow(10, 2.0)


def test_a_clock_stepping_back_adds_no_tokens():
    limiter = ContainerLimiter(RateLimit(lines_per_second=10), now=50.0)
    limiter.keep(events(10), 50.0)
    assert limiter.keep(events(10), 40.0) == []
    assert len(limiter.keep(events(10), 50.2)) == 2


def test_a_flood_gets_the_rate_on_average():
    limiter = ContainerLimiter(RateLimit(lines_per_second=20, burst_lines=40), now=0.0)
    kept = sum(len(limiter.keep(events(50), i / 2)) for i in range(40))  # 100 lines/s, 20 s
    assert kept == 40 + 20 * 19.5  # the burst, then the rate
    assert limiter.dropped_events == 2000 - kept


steps = st.lists(
    st.tuples(st.floats(0, 2, allow_nan=False), st.integers(0, 3000)), min_size=1, max_size=60
)
limits = st.builds(
    RateLimit,
    lines_per_second=st.sampled_from([0, 1, 5, 100]),
    bytes_per_second=st.sampled_from([0, 100, 4096]),
    burst_lines=st.sampled_from([0, 1, 50]),
    burst_bytes=st.sampled_from([0, 1000]),
)


@given(limit=limits, steps=steps)
def test_never_more_than_the_burst_plus_the_rate_times_the_time(limit, steps):
    limiter = ContainerLimiter(limit, now=0.0)
    now, kept_lines, kept_bytes, biggest = 0.0, 0, 0, 0
    for gap, size in steps:
        now += gap
        if limiter.allow(size, now):
            kept_lines += 1
            kept_bytes += size
            biggest = max(biggest, size)
    if limit.lines_per_second:
        burst = max(limit.burst_lines or limit.lines_per_second, 1)
        assert kept_lines <= burst + limit.lines_per_second * now + 1e-6
    if limit.bytes_per_second:
        burst = limit.burst_bytes or limit.bytes_per_second
        assert kept_bytes <= burst + limit.bytes_per_second * now + biggest + 1e-6
    assert kept_lines + limiter.dropped_events == len(steps)


@given(
    limit=limits,
    chunks=st.lists(
        st.tuples(st.floats(0, 1), st.lists(st.integers(0, 500), max_size=30)), max_size=12
    ),
)
def test_a_chunk_at_once_decides_as_event_by_event_would(limit, chunks):
    whole, single = ContainerLimiter(limit, 0.0), ContainerLimiter(limit, 0.0)
    now = 0.0
    for gap, sizes in chunks:
        now += gap
        chunk = [LogEvent(b"t", b"stdout", b"x" * s, i) for i, s in enumerate(sizes)]
        expected = [e for e in chunk if single.allow(len(e.message), now)]
        assert list(whole.keep(chunk, now)) == expected
    assert (whole.dropped_events, whole.dropped_bytes) == (
        single.dropped_events,
        single.dropped_bytes,
    )


def test_annotation_values():
    assert parse_rate_limit("lines_per_second=500, bytes_per_second=1MiB") == LimitOverride(
        lines_per_second=500, bytes_per_second=1 << 20
    )
    assert parse_rate_limit("burst_lines=1000,burst_bytes=512KiB") == LimitOverride(
        burst_lines=1000, burst_bytes=512 << 10
    )
    assert parse_rate_limit(" off ") == UNLIMITED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lines=5", "'lines=5': expected off, or key=value pairs with the keys lines_per_second"),
        ("lines_per_second=-1", "lines_per_second='-1': expected a number at least 0"),
        ("lines_per_second=fast", "lines_per_second='fast': expected a number"),
        ("bytes_per_second=1XB", "bytes_per_second='1XB': expected a number"),
        ("burst_lines=0.5", "burst_lines='0.5': expected a number at least 0 (bursts at least 1)"),
        ("lines_per_second=1,lines_per_second=2", "'lines_per_second=2': expected off"),
        ("lines_per_second=inf", "expected a number"),
    ],
)
def test_annotation_mistakes_say_what_is_accepted(text, message):
    with pytest.raises(ValueError) as info:
        parse_rate_limit(text)
    assert message in str(info.value)


POLICY_CONFIG = """
limits:
  lines_per_second: 100
  bytes_per_second: 64KiB
  namespaces:
    batch:
      lines_per_second: 1000
    'team-*':
      bytes_per_second: 0
      burst_lines: 500
    'team-b*':
      lines_per_second: 1
"""


def test_limits_come_from_the_namespace_entry_then_the_global_keys_then_the_annotation():
    policy = LimitPolicy(parse_config(POLICY_CONFIG, {}).limits)
    assert policy.for_container("shop") == RateLimit(100, 65536, 0, 0)
    assert policy.for_container("batch") == RateLimit(1000, 65536, 0, 0)
    assert policy.for_container("team-blue") == RateLimit(100, 0, 500, 0)  # the first glob
    override = LimitOverride(lines_per_second=5)
    assert policy.for_container("batch", override) == RateLimit(5, 65536, 0, 0)
    assert policy.for_container("batch", UNLIMITED).unlimited


def test_annotations_can_be_ignored():
    cfg = parse_config(POLICY_CONFIG + "  annotations: false\n", {})
    assert LimitPolicy(cfg.limits).for_container("shop", UNLIMITED) == RateLimit(100, 65536, 0, 0)


def test_no_limits_configured_means_unlimited_containers():
    assert LimitPolicy(parse_config("", {}).limits).for_container("any").unlimited
