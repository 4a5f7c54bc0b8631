"""Property tests: round trips through the runtime formats, and no input makes a parser raise."""

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import (
    DecoderOptions,
    FileDecoder,
    NotAContainerLog,
    normalize_time,
    parse_cri,
    parse_docker,
    parse_log_path,
)
from shipper.logformat import cri_record, docker_record

messages = st.binary(max_size=3000).map(lambda b: b.replace(b"\n", b""))
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
    max_size=1500,
)
cuts = st.lists(st.integers(min_value=1, max_value=3000), max_size=12)
streams = st.sampled_from(["stdout", "stderr"])
times = st.sampled_from(
    ["2024-03-01T10:20:30Z", "2024-03-01T10:20:30.1Z", "2024-03-01T10:20:30.123456789Z"]
)


def decode_all(data: bytes, chunks: list[int] | None = None) -> list:
    """Decode `data`, fed in line-aligned pieces, then flushed."""
    decoder = FileDecoder(DecoderOptions(max_event_bytes=1 << 20))
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    events, offset = [], 0
    bounds = sorted({min(c, len(lines)) for c in chunks or []} | {0, len(lines)})
    for a, b in pairwise(bounds):
        piece = b"".join(lines[a:b])
        events += decoder.feed(offset, piece, now=0.0)
        offset += len(piece)
    return events + decoder.flush_all(now=0.0)


@given(message=messages, cut=cuts, stream=streams, time=times, feeds=cuts)
def test_cri_message_split_anywhere_parses_back_identical(message, cut, stream, time, feeds):
    [event] = decode_all(cri_record(message, stream, time, cuts=cut), feeds)
    assert event.message == message
    assert event.stream == stream.encode()
    assert event.flags == ()
    assert event.offset == 0


@given(message=texts, cut=cuts, stream=streams, time=times)
def test_docker_message_split_anywhere_parses_back_identical(message, cut, stream, time):
    [event] = decode_all(docker_record(message, stream, time, cuts=cut))
    assert event.message == message.encode()
    assert event.stream == stream.encode()
    assert event.flags == ()


@given(out=messages, err=messages, out_cuts=cuts, err_cuts=cuts, order=st.randoms())
def test_interleaved_streams_reassemble_independently(out, err, out_cuts, err_cuts, order):
    a = [x + b"\n" for x in cri_record(out, "stdout", cuts=out_cuts).split(b"\n")[:-1]]
    b = [x + b"\n" for x in cri_record(err, "stderr", cuts=err_cuts).split(b"\n")[:-1]]
    merged = []
    while a or b:
        source = a if (a and (not b or order.random() < 0.5)) else b
        merged.append(source.pop(0))
    events = decode_all(b"".join(merged))
    assert {e.stream: e.message for e in events} == {b"stdout": out, b"stderr": err}
    assert len(events) == 2


@settings(max_examples=300)
@given(data=st.binary(max_size=2000), long_head=st.binary(max_size=200), cap=st.integers(1, 500))
def test_no_input_makes_the_decoder_raise(data, long_head, cap):
    decoder = FileDecoder(DecoderOptions(max_event_bytes=cap, partial_timeout=0.0))
    body = data if data.endswith(b"\n") else data + b"\n"
    events = decoder.feed(0, body, now=0.0)
    events += decoder.feed_long_line(len(body), long_head, now=0.0)
    events += decoder.flush_expired(now=1.0) + decoder.flush_all(now=1.0)
    line_starts = {0}
    pos = 0
    for line in body.split(b"\n")[:-1]:
        pos += len(line) + 1
        line_starts.add(pos)
    assert all(e.offset in line_starts for e in events)
    assert len({e.offset for e in events}) == len(events)
    assert all(len(e.message) <= cap for e in events)


@given(st.binary(max_size=400))
def test_line_parsers_never_raise_on_bytes(raw):
    assert parse_cri(raw) is None or isinstance(parse_cri(raw)[3], bytes)
    assert parse_docker(raw) is None or isinstance(parse_docker(raw)[3], bytes)
    result = normalize_time(raw)
    assert result is None or result.endswith(b"Z")


@given(st.text(max_size=300))
def test_path_parser_gives_a_reference_or_not_a_container_log(path):
    try:
        ref = parse_log_path(path)
    except NotAContainerLog as exc:
        assert "not a container log" in str(exc)
    else:
        assert ref.namespace and ref.pod and ref.container


line_kinds = st.sampled_from(["final", "partial", "offset_time", "tagged", "junk", "empty"])


@given(st.lists(st.tuples(line_kinds, messages, streams), max_size=30), st.integers(0, 10**9))
def test_a_block_decodes_exactly_as_its_lines_one_by_one(lines, offset):
    """The whole-block fast path and the per-line path never disagree."""
    raw = []
    for kind, message, stream in lines:
        if kind == "final":
            raw.append(b"2024-03-01T10:20:30.5Z %s F %s\n" % (stream.encode(), message))
        elif kind == "partial":
            raw.append(b"2024-03-01T10:20:30Z %s P %s\n" % (stream.encode(), message))
        elif kind == "offset_time":
            raw.append(b"2024-03-01T12:20:30+02:00 %s F %s\n" % (stream.encode(), message))
        elif kind == "tagged":
            raw.append(b"2024-03-01T10:20:30Z %s F:x %s\n" % (stream.encode(), message))
        elif kind == "junk":
            raw.append(message + b"\n")
        else:
            raw.append(b"2024-03-01T10:20:30Z %s F\n" % stream.encode())
    first = b"2024-03-01T10:20:29Z stdout F detect\n"
    whole = FileDecoder()
    one_by_one = FileDecoder()
    events_whole = whole.feed(offset, first, 0.0) + whole.feed(
        offset + len(first), b"".join(raw), 0.0
    )
    events_single = one_by_one.feed(offset, first, 0.0)
    pos = offset + len(first)
    for line in raw:
        events_single += one_by_one.feed(pos, line, 0.0)
        pos += len(line)
    assert events_whole == events_single
    assert whole.pending_start() == one_by_one.pending_start()


docker_lines = st.one_of(
    st.builds(  # the common record: final line, UTC time
        lambda m, s, t: docker_record(m, s, t),
        texts,
        streams,
        times,
    ),
    st.builds(  # partial chunks, other zones, escapes, surrogates, junk
        lambda m, s, c: docker_record(m, s, "2024-03-01T11:20:30+01:00", cuts=c),
        texts,
        streams,
        cuts,
    ),
    st.sampled_from(
        [
            b'{"log":"\\ud800 lone\\n","stream":"stdout","time":"2024-03-01T10:20:30Z"}\n',
            b'{"log":"x\\n","stream":"other","time":"2024-03-01T10:20:30Z"}\n',
            b'{"log":"a\\n","stream":"stdout","time":"2024-03-01T10:20:30Z"},{"log":"b"}\n',
            b"[1, 2]\n",
            b"\n",
            b"not json\n",
            b'{"log":1,"stream":"stdout","time":"2024-03-01T10:20:30Z"}\n',
            b'{"log":["\\n"],"stream":"stdout","time":"2024-03-01T10:20:30Z"}\n',
            b'{"log":"x\\n","stream":"stdout","time":"2024-03-01T10:20:30Z\\n2024-03-01T10:20:31Z"}\n',
            b'{"log":"x\\n","stream":["stdout"],"time":"2024-03-01T10:20:30Z"}\n',
            b'{"log":"x\\n","stream":"stdout","time":7}\n',
            b'{"log":"","stream":"stdout","time":"2024-03-01T10:20:30Z"}\n',
        ]
    ),
)


@settings(max_examples=300)
@given(lines=st.lists(docker_lines, min_size=1, max_size=12), cap=st.integers(1, 4000))
def test_docker_block_fast_path_gives_what_the_line_by_line_path_gives(lines, cap):
    first = docker_record("first", "stdout", "2024-03-01T10:20:30Z")
    block = b"".join(lines)
    fast, slow = (FileDecoder(DecoderOptions(max_event_bytes=cap)) for _ in range(2))
    for decoder in (fast, slow):  # the format is decided by the first line
        decoder.feed(0, first, now=0.0)
    got = fast.feed(len(first), block, now=0.0) + fast.flush_all(now=0.0)
    want = slow.feed_lines(len(first), block, now=0.0) + slow.flush_all(now=0.0)
    assert got == want
    assert fast.take_dropped() == slow.take_dropped()
