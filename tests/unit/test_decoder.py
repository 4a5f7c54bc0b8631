import orjson
import pytest

from parsers import (
    CRI,
    DOCKER,
    MULTILINE,
    MULTILINE_RULES,
    PARSE_ERROR,
    PARTIAL,
    TRUNCATED,
    DecoderOptions,
    FileDecoder,
    LogEvent,
)
from shipper.logformat import cri_record, docker_record

T1 = "2024-03-01T10:20:30.000000001Z"
T2 = "2024-03-01T10:20:31.000000002Z"


def decode(data: bytes, options: DecoderOptions | None = None, offset: int = 0):
    decoder = FileDecoder(options or DecoderOptions())
    return decoder, decoder.feed(offset, data, now=0.0)


def test_cri_lines_become_events_with_their_offsets():
    data = cri_record(b"one", time=T1) + cri_record(b"two", "stderr", time=T2)
    decoder, events = decode(data, offset=100)
    assert decoder.format == CRI
    first_len = len(cri_record(b"one", time=T1))
    assert events == [
        LogEvent(T1.encode(), b"stdout", b"one", 100),
        LogEvent(T2.encode(), b"stderr", b"two", 100 + first_len),
    ]


@pytest.mark.parametrize("fmt", ["cri", "docker"])
def test_100kb_line_split_into_16k_partials_is_one_event(fmt):
    message = bytes(range(32, 127)) * 1100  # about 104 KB, printable so docker can carry it
    data = (
        cri_record(message, time=T1) if fmt == "cri" else docker_record(message.decode(), time=T1)
    )
    assert data.count(b"\n") == 7
    decoder, events = decode(data)
    assert [e.message for e in events] == [message]
    assert events[0].offset == 0
    assert events[0].time == T1.encode()
    assert decoder.pending_start() is None


def test_interleaved_stdout_and_stderr_partials_join_per_stream():
    out = cri_record(b"o" * 10 + b"O" * 10, "stdout", T1, cuts=[10]).split(b"\n")
    err = cri_record(b"e" * 10 + b"E" * 10, "stderr", T2, cuts=[10]).split(b"\n")
    data = b"\n".join([out[0], err[0], out[1], err[1]]) + b"\n"
    _, events = decode(data)
    assert [(e.stream, e.message, e.time) for e in events] == [
        (b"stdout", b"o" * 10 + b"O" * 10, T1.encode()),
        (b"stderr", b"e" * 10 + b"E" * 10, T2.encode()),
    ]
    assert events[1].offset == len(out[0]) + 1


def test_partial_across_feeds_keeps_first_fragment_offset_and_blocks_commit():
    data = cri_record(b"abcdef", time=T1, cuts=[3])
    first, second = data.split(b"\n")[:2]
    decoder = FileDecoder()
    assert decoder.feed(50, first + b"\n", now=0.0) == []
    assert decoder.pending_start() == 50
    events = decoder.feed(50 + len(first) + 1, second + b"\n", now=1.0)
    assert events == [LogEvent(T1.encode(), b"stdout", b"abcdef", 50)]
    assert decoder.pending_start() is None


def test_docker_escapes_are_decoded_in_events():
    line = b'{"log":"\\u003cb\\u003e\\u0026\\n","stream":"stdout","time":"2024-03-01T10:20:30Z"}\n'
    decoder, events = decode(line)
    assert decoder.format == DOCKER
    assert events[0].message == b"<b>&"


def test_binary_junk_between_good_lines_becomes_flagged_events_and_spares_neighbours():
    junk = b"\x00\xff\xfe\x80garbage \x1b[31m"
    data = cri_record(b"before", time=T1) + junk + b"\n" + cri_record(b"after", time=T2)
    _, events = decode(data)
    assert [(e.message, e.flags) for e in events] == [
        (b"before", ()),
        (junk, (PARSE_ERROR,)),
        (b"after", ()),
    ]
    assert events[1].time is None
    assert events[2].offset == len(data) - len(cri_record(b"after", time=T2))


def test_invalid_utf8_message_is_kept_as_bytes():
    _, events = decode(cri_record(b"caf\xe9 \xff", time=T1))
    assert events[0].message == b"caf\xe9 \xff"
    assert events[0].flags == ()


def test_format_is_decided_once_and_cannot_flip():
    docker_line = docker_record("json", time=T1)
    data = cri_record(b"cri", time=T1) + docker_line
    decoder, events = decode(data)
    assert decoder.format == CRI
    assert events[1].flags == (PARSE_ERROR,)
    assert events[1].message == docker_line.rstrip(b"\n")


def test_format_detection_skips_leading_garbage():
    decoder, events = decode(b"junk\n" + docker_record("ok", time=T1))
    assert decoder.format == DOCKER
    assert [e.flags for e in events] == [(PARSE_ERROR,), ()]


def test_size_cap_truncates_event_and_counts_dropped_bytes():
    options = DecoderOptions(max_event_bytes=1000)
    message = b"x" * 2500
    decoder, events = decode(cri_record(message, time=T1, split=300), options)
    assert len(events) == 1
    assert events[0].message == message[:1000]
    assert events[0].flags == (TRUNCATED,)
    assert decoder.dropped_bytes == 1500


def test_size_cap_applies_to_a_single_final_line_and_to_malformed_lines():
    options = DecoderOptions(max_event_bytes=10)
    data = cri_record(b"y" * 25, time=T1) + b"z" * 30 + b"\n"
    decoder, events = decode(data, options)
    assert [(e.message, e.flags) for e in events] == [
        (b"y" * 10, (TRUNCATED,)),
        (b"z" * 10, (PARSE_ERROR, TRUNCATED)),
    ]
    assert decoder.dropped_bytes == 35


def test_held_memory_stays_bounded_by_the_cap_whatever_arrives():
    options = DecoderOptions(max_event_bytes=4096)
    decoder = FileDecoder(options)
    chunk = b"".join(b"%s stdout P %s\n" % (T1.encode(), b"a" * 1000) for _ in range(200))
    for i in range(20):
        decoder.feed(i * len(chunk), chunk, now=float(i))
        assert decoder.held_bytes() <= 4096


def test_dangling_partial_is_flushed_after_timeout_flagged_partial():
    decoder = FileDecoder(DecoderOptions(partial_timeout=5.0))
    data = b"%s stdout P half\n" % T1.encode()
    assert decoder.feed(0, data, now=10.0) == []
    assert decoder.flush_expired(now=14.9) == []
    events = decoder.flush_expired(now=15.0)
    assert events == [LogEvent(T1.encode(), b"stdout", b"half", 0, (PARTIAL,))]
    assert decoder.pending_start() is None


def test_flush_all_emits_every_held_partial():
    decoder = FileDecoder()
    data = b"%s stdout P a\n%s stderr P b\n" % (T1.encode(), T1.encode())
    decoder.feed(0, data, now=0.0)
    events = decoder.flush_all(now=0.0)
    assert sorted((e.stream, e.message, e.flags) for e in events) == [
        (b"stderr", b"b", (PARTIAL,)),
        (b"stdout", b"a", (PARTIAL,)),
    ]


def test_long_line_head_is_flagged_truncated():
    decoder = FileDecoder()
    head = b"%s stdout F %s" % (T1.encode(), b"k" * 100)
    events = decoder.feed_long_line(7, head, now=0.0)
    assert events == [LogEvent(T1.encode(), b"stdout", b"k" * 100, 7, (TRUNCATED,))]


def test_long_docker_line_head_is_a_truncated_parse_error():
    decoder = FileDecoder()
    decoder.feed(0, docker_record("first", time=T1), now=0.0)
    head = orjson.dumps({"log": "z" * 50, "stream": "stdout", "time": T1})[:30]
    [event] = decoder.feed_long_line(100, head, now=0.0)
    assert event.flags == (PARSE_ERROR, TRUNCATED)
    assert event.message == head


JAVA_TRACE = [
    b'Exception in thread "main" java.lang.IllegalStateException: boom',
    b"\tat com.example.App.run(App.java:10)",
    b"\tat com.example.App.main(App.java:5)",
    b"Caused by: java.io.IOException: disk",
    b"\t... 2 more",
]
PYTHON_TRACE = [
    b"Traceback (most recent call last):",
    b'  File "/app/main.py", line 3, in <module>',
    b"    main()",
    b"ValueError: bad value",
]
GO_TRACE = [
    b"panic: runtime error: index out of range [5] with length 3",
    b"",
    b"goroutine 1 [running]:",
    b"main.main()",
    b"\t/app/main.go:8 +0x1d",
    b"exit status 2",
]


@pytest.mark.parametrize(
    ("rule", "trace"), [("java", JAVA_TRACE), ("python", PYTHON_TRACE), ("go", GO_TRACE)]
)
def test_builtin_multiline_rules_join_stack_traces(rule, trace):
    options = DecoderOptions(multiline=MULTILINE_RULES[rule])
    data = cri_record(b"starting", time=T1)
    trace_offset = len(data)
    data += b"".join(cri_record(line, time=T2) for line in trace)
    data += cri_record(b"next request ok", time=T1)
    decoder = FileDecoder(options)
    events = decoder.feed(0, data, now=0.0) + decoder.flush_all(now=0.0)
    assert [(e.message, e.flags) for e in events] == [
        (b"starting", ()),
        (b"\n".join(trace), (MULTILINE,)),
        (b"next request ok", ()),
    ]
    assert events[1].offset == trace_offset
    assert events[1].time == T2.encode()


def test_multiline_holds_commit_until_the_event_is_complete_then_flushes_on_timeout():
    decoder = FileDecoder(DecoderOptions(multiline=MULTILINE_RULES["java"], multiline_timeout=1.0))
    data = b"".join(cri_record(line, time=T1) for line in JAVA_TRACE[:2])
    assert decoder.feed(40, data, now=0.0) == []
    assert decoder.pending_start() == 40
    assert decoder.flush_expired(now=0.5) == []
    [event] = decoder.flush_expired(now=1.0)
    assert event.message == b"\n".join(JAVA_TRACE[:2])
    assert decoder.pending_start() is None


def test_multiline_joined_event_respects_the_size_cap():
    options = DecoderOptions(max_event_bytes=100, multiline=MULTILINE_RULES["java"])
    lines = [b"Exception: x"] + [b"\tat frame.number(F.java:%d)" % i for i in range(20)]
    decoder = FileDecoder(options)
    events = decoder.feed(0, b"".join(cri_record(x, time=T1) for x in lines), now=0.0)
    events += decoder.flush_all(now=0.0)
    assert len(events) == 1
    assert len(events[0].message) <= 100
    assert set(events[0].flags) == {MULTILINE, TRUNCATED}


def test_bytes_cut_by_the_multiline_joiner_are_counted_when_they_are_cut():
    options = DecoderOptions(max_event_bytes=100, multiline=MULTILINE_RULES["java"])
    lines = [b"Exception: x"] + [b"\tat frame.number(F.java:%d)" % i for i in range(20)]
    decoder = FileDecoder(options)
    decoder.feed(0, b"".join(cri_record(x, time=T1) for x in lines), now=0.0)
    # Still held (not flushed), yet what no longer fits is already counted.
    cut = decoder.take_dropped()
    [event] = decoder.flush_all(now=0.0)
    assert len(event.message) == 100
    shipped = len(event.message) - event.message.count(b"\n")  # the lines' own bytes
    assert cut == sum(len(x) for x in lines) - shipped
    assert decoder.take_dropped() == 0  # counted once


def test_a_block_of_common_docker_records_takes_the_one_parse_path():
    from parsers.decoder import _docker_rows

    lines = [docker_record(f"line {i}", "stdout", "2024-03-01T10:20:30.5Z") for i in range(3)]
    rows = _docker_rows(100, b"".join(lines), 1 << 20)
    assert rows is not None
    assert [(message, offset) for _, _, message, offset in rows] == [
        (b"line 0", 100),
        (b"line 1", 100 + len(lines[0])),
        (b"line 2", 100 + len(lines[0]) + len(lines[1])),
    ]
    partial = docker_record("cut", "stdout", "2024-03-01T10:20:30.5Z", cuts=[1])
    assert _docker_rows(0, lines[0] + partial, 1 << 20) is None  # joined line by line
