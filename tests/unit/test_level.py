"""log.level detection: a corpus of real logger output, and properties of the rules."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from parsers.level import LEVELS, MAX_LEVEL_BYTES, detect_level, level_of_fields, normalise

CORPUS = Path(__file__).parent / "data" / "levels.txt"


def corpus() -> list[tuple[str, bytes | None, bytes]]:
    """(section, expected level, message) for every event in data/levels.txt."""
    out, section = [], ""
    for line in CORPUS.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        if not line or line.startswith("#"):
            continue
        expected, message = line.split("\t", 1)
        text = message.replace("⇥", "\t").replace("⏎", "\n").encode()
        out.append((section, None if expected == "-" else expected.encode(), text))
    return out


CASES = corpus()


def test_the_corpus_covers_every_family_and_both_outcomes():
    sections = {s for s, _, _ in CASES}
    for family in ("Go", "Java", "Python", "Node", ".NET", "nginx", "must not"):
        assert any(family in s for s in sections), family
    found = {level for _, level, _ in CASES}
    assert set(LEVELS) <= found and None in found
    assert len(CASES) >= 200


@pytest.mark.parametrize(
    ("section", "expected", "message"), CASES, ids=[m[:50].decode() for _, _, m in CASES]
)
def test_corpus_line(section, expected, message):
    assert detect_level(message) == expected


def test_parsed_json_gives_what_its_bytes_give():
    for _, expected, message in CASES:
        if message.startswith(b"{"):
            fields = orjson.loads(message)
            assert level_of_fields(fields) == expected, message


# ---- properties ----------------------------------------------------------------------------

# Words a line may start with that do not stand for a level, in the cases people write them.
PROSE = [
    "user", "the", "Started", "GET", "POST", "request", "connection", "Error-prone",
    "processed", "information", "Warnings", "debugger", "errors", "infos", "levels",
    "panicked", "Criticality", "noted", "failover", "critique",
]  # fmt: skip
tails = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200).map(
    lambda t: t.encode()
)


@given(word=st.sampled_from(PROSE), tail=tails)
def test_a_line_starting_with_prose_has_no_level_whatever_follows(word, tail):
    assert detect_level(word.encode() + b" " + tail) is None


@given(
    words=st.lists(
        st.sampled_from(["error", "WARN", "info", "FATAL", "debug", "ERROR:"]), max_size=5
    ),
    prose=st.lists(st.sampled_from(PROSE), min_size=1, max_size=5),
)
def test_level_words_after_the_first_token_are_never_read(words, prose):
    line = " ".join([prose[0], *words, *prose[1:], *words])
    assert detect_level(line.encode()) is None


# (prefix, how the level is written, what must follow it) of formats in the corpus.
FORMATS = [
    ("", "{}", ": "),
    ("", "[{}]", " "),
    ("", "{}", "[0000] "),
    ("2026-12-01 10:00:00 ", "{}", " "),
    ("2026-12-01T10:00:00.123Z ", "{}", " "),
    ("2026-12-01T10:00:00.000Z\t", "{}", "\t"),
    ("10:00:00.123 [main] ", "{}", " "),
    ("[2026-12-01 10:00:00 +0000] [1] ", "[{}]", " "),
    ("2026/12/01 10:00:00 ", "[{}]", " "),
    ("2026-12-01 10:00:00,123 - app.db - ", "{}", " - "),
    ("2026-12-01 10:00:00.123 | ", "{}", " | "),
    ("[2026-12-01T10:00:00,123]", "[{}]", "[o.e.n.Node] "),
    ('time="2026-12-01T10:00:00Z" level=', "{}", " msg="),
]
SPELLINGS = {
    b"trace": ["TRACE", "TRC"],
    b"debug": ["DEBUG", "DBG"],
    b"info": ["INFO", "INF"],
    b"warn": ["WARN", "WARNING", "WRN"],
    b"error": ["ERROR", "ERR"],
    b"fatal": ["FATAL", "CRITICAL", "FTL"],
}
spelled = st.sampled_from([(level, w) for level, ws in SPELLINGS.items() for w in ws])


@given(form=st.sampled_from(FORMATS), spelling=spelled, tail=tails)
@example(form=("", "[{}]", " "), spelling=(b"trace", "TRACE"), tail=b"INF")  # not a field
def test_the_level_does_not_depend_on_what_follows_it(form, spelling, tail):
    prefix, written, after = form
    level, word = spelling
    line = (prefix + written.format(word) + after).encode() + tail
    assert detect_level(line) == level


@given(spelling=spelled, lower=st.booleans(), tail=tails)
def test_klog_json_and_logfmt_keys_whatever_follows(spelling, lower, tail):
    level, word = spelling
    word = word.lower() if lower else word
    assert (
        detect_level(b'{"level":"' + word.encode() + b'","msg":' + orjson.dumps(tail.decode()))
        == level
    )
    assert detect_level(b"level=" + word.encode() + b" msg=" + tail.replace(b"\n", b" ")) == level
    letter = (
        b"IWEF"[[b"info", b"warn", b"error", b"fatal"].index(level)]
        if level in (b"info", b"warn", b"error", b"fatal")
        else None
    )
    if letter is not None:
        assert detect_level(bytes([letter]) + b"1201 10:00:00.000000 1 x.go:1] " + tail) == level


json_scalars = st.one_of(st.text(max_size=30), st.integers(-5, 5), st.booleans(), st.none())
other_fields = st.dictionaries(
    st.text(max_size=12).filter(
        lambda k: (
            k.lower()
            not in {
                "level",
                "lvl",
                "severity",
                "loglevel",
                "log_level",
                "log.level",
                "levelname",
                "@l",
                "log",
            }
        )
    ),
    st.one_of(json_scalars, st.dictionaries(st.text(max_size=8), json_scalars, max_size=3)),
    max_size=6,
)


@given(
    fields=other_fields,
    spelling=spelled,
    key=st.sampled_from(["level", "Level", "severity", "lvl", "log.level"]),
    at=st.integers(0, 6),
)
def test_a_top_level_json_key_is_found_wherever_it_stands(fields, spelling, key, at):
    level, word = spelling
    items = list(fields.items())
    items.insert(min(at, len(items)), (key, word))
    assert detect_level(orjson.dumps(dict(items))) == level


@given(fields=other_fields, spelling=spelled, owner=st.sampled_from(["user", "ctx", "request"]))
def test_a_level_key_inside_another_object_is_not_the_lines_level(fields, spelling, owner):
    _, word = spelling
    doc = {**fields, owner: {"level": word}}
    assert detect_level(orjson.dumps(doc)) is None
    assert detect_level(orjson.dumps({**fields, "log": {"level": word}})) == spelling[0]


@given(value=st.binary(max_size=64))
def test_values_are_levels_or_short_plain_lowercase_tokens(value):
    found = normalise(value)
    if found is not None:
        assert found in LEVELS or (
            len(found) <= MAX_LEVEL_BYTES and found == found.lower() and b'"' not in found
        )
        assert found.decode("ascii")  # safe to write between JSON quotes as it is


@given(message=st.binary(max_size=300))
def test_no_input_makes_detection_raise_and_results_are_plain(message):
    found = detect_level(message)
    assert found is None or found in LEVELS or normalise(found) == found


def test_unknown_values_under_level_keys_are_kept_lower_cased_and_bounded():
    assert detect_level(b'{"severity":"DEFAULT","msg":"x"}') == b"default"
    assert detect_level(b'{"level":"Notice"}') == b"info"
    assert detect_level(b"ts=1 level=Audit msg=x") == b"audit"
    assert detect_level(b'{"level":"' + b"x" * (MAX_LEVEL_BYTES + 1) + b'"}') is None
    assert detect_level(b'{"level":35}') == b"35"
