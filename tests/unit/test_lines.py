import pytest

from parsers import parse_cri, parse_docker

T = b"2024-03-01T10:20:30.123456789Z"


def test_cri_final_line_keeps_message_byte_for_byte():
    line = T + b" stdout F  two  spaces\tand a tab \x01"
    assert parse_cri(line) == (T, b"stdout", True, b" two  spaces\tand a tab \x01")


@pytest.mark.parametrize(
    ("tag", "final"), [(b"P", False), (b"F", True), (b"P:TAG1:TAG2", False), (b"F:x", True)]
)
def test_cri_tags_after_the_partial_flag_are_accepted(tag, final):
    assert parse_cri(T + b" stderr " + tag + b" msg") == (T, b"stderr", final, b"msg")


@pytest.mark.parametrize("line", [T + b" stdout F", T + b" stdout F "])
def test_cri_empty_message(line):
    assert parse_cri(line) == (T, b"stdout", True, b"")


def test_cri_time_with_zone_offset_is_normalised():
    parsed = parse_cri(b"2024-03-01T12:20:30.123+02:00 stdout F hi")
    assert parsed == (b"2024-03-01T10:20:30.123Z", b"stdout", True, b"hi")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        T + b" stdin F x",
        T + b" stdout X x",
        T + b" stdout FX x",
        b"not-a-time stdout F x",
        b'{"log":"x\\n","stream":"stdout","time":"2024-03-01T10:20:30Z"}',
    ],
)
def test_cri_rejects_lines_of_other_shapes(line):
    assert parse_cri(line) is None


def test_docker_decodes_json_escapes_and_strips_the_newline():
    line = (
        b'{"log":"\\u003chtml\\u003e \\"q\\" \\u00e9\\t\\n",'
        b'"stream":"stderr","time":"2024-03-01T10:20:30.5Z"}'
    )
    assert parse_docker(line) == (
        b"2024-03-01T10:20:30.5Z",
        b"stderr",
        True,
        '<html> "q" \u00e9\t'.encode(),
    )


def test_docker_log_without_newline_is_a_partial_chunk():
    line = b'{"log":"abc","stream":"stdout","time":"2024-03-01T10:20:30Z","attrs":{"k":"v"}}'
    assert parse_docker(line) == (b"2024-03-01T10:20:30Z", b"stdout", False, b"abc")


def test_docker_lone_surrogate_escape_is_replaced_not_fatal():
    line = b'{"log":"a\\ud800b\\n","stream":"stdout","time":"2024-03-01T10:20:30Z"}'
    parsed = parse_docker(line)
    assert parsed is not None
    assert parsed[3] == b"a?b"


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"{",
        b"[]",
        b'{"log":1,"stream":"stdout","time":"2024-03-01T10:20:30Z"}',
        b'{"log":"x\\n","stream":"stdin","time":"2024-03-01T10:20:30Z"}',
        b'{"log":"x\\n","stream":"stdout"}',
        b'{"log":"x\\n","stream":"stdout","time":"soon"}',
        b"\xff\xfe{",
        b"[" * 100000,
    ],
)
def test_docker_rejects_lines_of_other_shapes(line):
    assert parse_docker(line) is None
