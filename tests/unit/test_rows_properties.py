"""Property tests: a block of common lines turned straight into documents (rows, no events)
gives byte for byte what the path through events gives."""

from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import FileDecoder
from parsers.decoder import events_of
from shipper.document import DocumentEncoder
from shipper.logformat import cri_record, docker_record

# Text lines of several kinds for level detection (a level word, JSON, logfmt, klog), and
# any bytes at all (invalid UTF-8 takes the flagged path inside encode_rows).
words = st.sampled_from(
    [
        b"ERROR boom",
        b'{"level":"warn","msg":"x"}',
        b"level=debug x=1",
        b"I1201 10:00:00.000000 1 a]",
    ]
)
messages = st.one_of(
    words,
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=100).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
)
streams = st.sampled_from(["stdout", "stderr"])
times = st.sampled_from(["2024-03-01T10:20:30Z", "2024-03-01T10:20:30.123456789Z"])
lines = st.lists(st.tuples(messages, streams, times), min_size=1, max_size=20)
encoders = st.builds(
    lambda level, metadata, target: _encoder(level, metadata, target),
    st.booleans(),
    st.sampled_from([b"", b'"kubernetes":{"pod":{"name":"web-\\"1\\""}},"host":{"name":"n"}']),
    st.sampled_from([None, ("logs-app-default", True), ("logs-app-default", False)]),
)


def _encoder(level: bool, metadata: bytes, target: tuple[str, bool] | None) -> DocumentEncoder:
    encoder = DocumentEncoder("/var/log/pods/a/b/0.log", metadata, True, b"id-", level=level)
    if target is not None:
        name, routed = target
        fields = b'"data_stream":{"type":"logs","dataset":"app","namespace":"default"}'
        encoder.set_stream(fields, name if routed else None)
    return encoder


def _both(encoder: DocumentEncoder, rows: list):
    assert encoder.takes_rows()
    by_rows: list[bytes] = []
    by_events: list[bytes] = []
    size_rows = encoder.encode_rows(rows, b"NOW", by_rows)
    size_events = encoder.encode(events_of(rows), b"NOW", by_events)
    return (by_rows, size_rows), (by_events, size_events)


@settings(max_examples=300)
@given(lines=lines, encoder=encoders, offset=st.integers(0, 10**12))
def test_cri_rows_encode_exactly_as_their_events(lines, encoder, offset):
    decoder = FileDecoder()
    decoder.feed(0, b"2024-03-01T10:20:29Z stdout F first\n", 0.0)  # the format: CRI
    block = b"".join(cri_record(m, s, t) for m, s, t in lines)
    rows = decoder.rows(offset, block)
    assert rows is not None, "a block of common lines takes the rows path"
    (by_rows, size), (by_events, want_size) = _both(encoder, rows)
    assert by_rows == by_events
    assert size == want_size == sum(map(len, by_rows))
    assert len(by_rows) == len(lines)


@settings(max_examples=200)
@given(
    lines=st.lists(
        st.tuples(st.one_of(words.map(bytes.decode), st.text(max_size=200)), streams, times),
        min_size=1,
        max_size=20,
    ),
    encoder=encoders,
    offset=st.integers(0, 10**12),
)
def test_docker_rows_encode_exactly_as_their_events(lines, encoder, offset):
    lines = [(m.replace("\n", ""), s, t) for m, s, t in lines]
    decoder = FileDecoder()
    decoder.feed(0, docker_record("first", "stdout", "2024-03-01T10:20:29Z"), 0.0)
    block = b"".join(docker_record(m, s, t) for m, s, t in lines)
    rows = decoder.rows(offset, block)
    if rows is None:  # lone surrogates: such a block is decoded line by line
        assert any(0xD800 <= ord(c) <= 0xDFFF for m, _, _ in lines for c in m)
        return
    (by_rows, size), (by_events, want_size) = _both(encoder, rows)
    assert by_rows == by_events
    assert size == want_size
    assert len(by_rows) == len(lines)
