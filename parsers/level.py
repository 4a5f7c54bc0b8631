"""`log.level` from a message: JSON and logfmt keys, klog headers, a leading level word.

Normalised to `trace`, `debug`, `info`, `warn`, `error`, `fatal`; another value under a
level key (`"severity":"DEFAULT"`) is kept, lower-cased, when it is a short plain token.
A level is only read where a format puts it: the key of a structured line, or the first
token of a text line (after a timestamp, bracketed thread or pid fields, `-`/`|`
separators), never a word further into the message. A bare word needs a delimiter that
marks it as a level: brackets, a colon or a tab in any case; a space only in upper case
(`ERROR connection refused`, not `error handling finished`). Only the first line of a
joined event is looked at.

Cost: one anchored regex match per text line, chosen by its first byte (most lines fail
on their first bytes); JSON with "level" as its first key is read without a regex. The
values returned are shared constants, safe to write between JSON quotes as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = b"trace", b"debug", b"info", b"warn", b"error", b"fatal"
LEVELS = (TRACE, DEBUG, INFO, WARN, ERROR, FATAL)
MAX_LEVEL_BYTES = 32  # a longer value under a level key is not a level

# What each level is written as, across loggers (lower case here; any case matches).
_WORDS: dict[bytes, tuple[str, ...]] = {
    TRACE: (
        "trace", "trc", "trce", "trac", "verbose", "vrb", "finest", "finer",
        *(f"trace{i}" for i in range(1, 9)),  # apache trace1..trace8
    ),
    DEBUG: ("debug", "dbg", "dbug", "debu", "fine", *(f"debug{i}" for i in range(1, 6))),
    INFO: ("info", "inf", "information", "informational", "notice"),
    WARN: ("warn", "warning", "wrn"),
    ERROR: ("error", "err", "erro", "eror", "severe", "fail"),
    FATAL: (
        "fatal", "fata", "ftl", "critical", "crit", "crt", "alert", "emerg", "emergency",
        "panic", "pani", "pnc", "dpanic",
    ),
}  # fmt: skip
# Words that are a level only in brackets: MySQL's [Note]; "Note: ..." is prose.
_BRACKETED_WORDS = {INFO: ("note",)}
_ALIASES: dict[bytes, bytes] = {
    w.encode(): level
    for table in (_WORDS, _BRACKETED_WORDS)
    for level, words in table.items()
    for w in words
}
_LETTER_LEVELS = {b"T": TRACE, b"D": DEBUG, b"I": INFO, b"W": WARN, b"E": ERROR, b"F": FATAL}
# syslog severities 0-7 (emerg, alert, crit, err, warning, notice, info, debug)
_SYSLOG = (FATAL, FATAL, FATAL, ERROR, WARN, INFO, INFO, DEBUG)
_PINO = {10: TRACE, 20: DEBUG, 30: INFO, 40: WARN, 50: ERROR, 60: FATAL}  # also bunyan
_PLAIN = re.compile(rb"[a-z0-9_.+-]{1,%d}" % MAX_LEVEL_BYTES)
_JSON_KEYS = {"level", "lvl", "severity", "loglevel", "log_level", "log.level", "levelname", "@l"}


def _trie(words: Iterable[str]) -> str:
    """A regex alternation of `words` as a trie, so a failing position costs one test."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def render(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + render(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return f"(?:{body})?" if len(alts) == 1 else body + "?"
        return body

    return render(tree)


_BARE = [w for words in _WORDS.values() for w in words]
_ANY_CASE = f"(?i:{_trie(_BARE)})"
_BRACKETED = f"(?i:{_trie(_BARE + [w for ws in _BRACKETED_WORDS.values() for w in ws])})"
_UPPER = _trie(w.upper() for w in _BARE)
_END = r"(?![A-Za-z0-9_])"
_DATE = r"(?:\d{4}[-/.]\d\d[-/.]\d\d|\d\d-[A-Z][a-z]{2}-\d{4})"  # ISO, Go, Tomcat
_TIME = r"\d\d?:\d\d(?::\d\d(?:[.,]\d{1,9})?)?(?:[ \t]?[AaPp][Mm])?"
_ZONE = r"(?:Z|[ \t]?(?:UTC|GMT)|[ \t]?[+-]\d\d:?\d\d)?"
_MONTH = r"[A-Z][a-z]{2}"
_STAMP = (
    rf"(?:{_DATE}(?:[T \t]{_TIME})?{_ZONE}"
    rf"|{_TIME}{_ZONE}"
    rf"|{_MONTH}[ \t]+\d\d?,?[ \t]+(?:\d{{4}}[ \t]+)?{_TIME})"  # syslog, JUL
)
# Fields that may stand between the timestamp and the level: [thread] [pid] [ts], a pid
# before a bracket, "- logger -" (Python), lone - or | separators.
# A bracketed field that is itself a level ([TRACE] INFO ...) is the level, not a field.
_LEVEL_IN_BRACKETS = rf"\[(?:[\w-]{{1,32}}:)?[ \t]*{_BRACKETED}[ \t]*\]"
_PIECE = (
    rf"(?:(?!{_LEVEL_IN_BRACKETS})\[[^\]\n]{{0,80}}\]"
    r"|\d{1,10}[ \t]+(?=\[)|-[ \t]+[\w.$<>:-]{1,64}+[ \t]+-|[-|])"
)
_PIECES = rf"(?:{_PIECE}[ \t]*){{0,3}}"
_LOGFMT_KEY = r"(?i:level|lvl|severity|loglevel|log_level|log\.level)"


def _forms(tag: str) -> str:
    """The ways a level word is written where a level stands; groups named w<kind><tag>."""
    return (
        # bracketed: [WARN] [info     ] [core:error]
        rf"(?:\[(?:[\w-]{{1,32}}:)?[ \t]*(?P<wb{tag}>{_BRACKETED})[ \t]*\]"
        # ending in a colon or a tab, any case: ERROR: info: WARNING:root: zap's tabs
        rf"|(?P<wc{tag}>{_ANY_CASE})[:\t]"
        # upper case before a space, [ (logrus), - or |, or the end: INFO  main - ...
        rf"|(?P<wu{tag}>{_UPPER}){_END}(?=[ \[|-]|$))"
    )


_STAMPED = rf"[ \t]*{_PIECES}{_forms('s')}"
_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
# One pattern per kind of first byte, so a line pays for the forms it could start.
_BY_FIRST_BYTE = {
    # a timestamp or a pid first: 2026-12-01 10:00:00,123 ..., 10:00:00.123 [main] ...
    b"0123456789": (
        rf"(?:(?:{_DATE}(?:[T \t]{_TIME})?|{_TIME}){_ZONE}|(?=\d{{1,10}}[ \t]+\[)){_STAMPED}"
    ),
    b"[": (
        rf"\[{_STAMP}[ \t]+(?P<wbserilog>{_ANY_CASE}){_END}[^\]\n]{{0,80}}\]"  # [10:00:00 INF]
        rf"|{_PIECES}{_forms('')}"
    ),
    b"<": r"<(?P<pri>\d{1,3})>(?=\d|[A-Z])",  # syslog priority: <34>1 2026-... <13>Dec  1 ...
    _ASCII_LETTERS: (
        r"(?P<klog>[IWEF])\d{4}[ \t]\d\d:\d\d:\d\d\.\d{6}"  # klog: I1201 10:00:00.000000
        r"|(?P<ruby>[DIWEF]), \["  # Ruby Logger: I, [2026-12-01T10:00:00.123 #1]
        # logfmt: [key=value ...] level=warn
        r"|(?:[\w.@-]{1,64}+=(?:\"(?:[^\"\\\n]|\\.){0,256}+\"|[^ \t\"\n]{0,256}+)[ \t]+){0,12}?"
        rf"(?P<key>{_LOGFMT_KEY})=\"?(?P<kv>[A-Za-z0-9_.+-]{{1,{MAX_LEVEL_BYTES}}})(?![^ \t\"\n])"
        rf"|{_MONTH}[ \t]+\d\d?,?[ \t]+(?:\d{{4}}[ \t]+)?{_TIME}{_STAMPED}"  # syslog, JUL
        rf"|{_forms('')}"
    ),
}
_NEXT_PAIR = re.compile(rb'"?[ \t]+[\w.@-]{1,64}=')


def _dispatch(patterns: dict[bytes, str]) -> list[re.Pattern[bytes] | None]:
    table: list[re.Pattern[bytes] | None] = [None] * 256
    for firsts, source in patterns.items():
        compiled = re.compile(source.encode())
        for byte in firsts:
            table[byte] = compiled
    return table


_TEXT = _dispatch(_BY_FIRST_BYTE)

_VALUE = rb'(?:"([^"\\\x00-\x1f]{1,%d})"|(-?\d{1,3})(?![\d.eE]))' % MAX_LEVEL_BYTES
_JSON_FIRST = re.compile(rb'"level"[ \t]*:[ \t]*' + _VALUE)
_JSON_LEVEL = re.compile(
    rb'"(?i:level|lvl|severity|loglevel|log_level|log\.level|levelname|@l)"[ \t]*:[ \t]*' + _VALUE
)


def detect_level(message: bytes) -> bytes | None:
    """The level of one event's message, normalised, or None when the line does not say."""
    if not message:
        return None
    first = message[0]
    if first == 0x7B:  # {
        # Most JSON loggers (zap, logrus, pino, winston) write "level" first.
        if message.startswith(b'{"level":"'):
            found = _ALIASES.get(message[10 : message.find(b'"', 10, 12 + MAX_LEVEL_BYTES)])
            if found is not None:
                return found
        m = _JSON_FIRST.match(message, 1)
        if m is None:
            return _json_level(message)
        return _json_value(m)
    pattern = _TEXT[first]
    if pattern is None:
        return None
    m = pattern.match(message)
    if m is None:
        return None
    kind = m.lastgroup or ""
    value = m.group(kind)
    if kind[0] == "w":
        return _ALIASES.get(value) or _ALIASES[value.lower()]
    if kind == "kv":
        found = _ALIASES.get(value.lower())
        if found is not None:
            return found
        # Another value only where the line is logfmt: `level=3 reached` is prose.
        if m.start("key") > 0 or _NEXT_PAIR.match(message, m.end()):
            return normalise(value)
        return None
    if kind == "pri":
        pri = int(value)
        return _SYSLOG[pri % 8] if pri < 192 else None
    return _LETTER_LEVELS[value]


def normalise(value: bytes) -> bytes | None:
    """A value written under a level key: one of LEVELS, another short plain token
    lower-cased, or None."""
    found = _ALIASES.get(value)
    if found is not None:
        return found
    low = value.strip().lower()
    found = _ALIASES.get(low)
    if found is not None:
        return found
    if low.isdigit():
        return _PINO.get(int(low), low)
    return low if _PLAIN.fullmatch(low) else None


def level_of_fields(fields: Mapping[str, Any]) -> bytes | None:
    """The level of a parsed JSON object (the `shipper.io/parser: json` case, parsed once):
    a top-level level key, else `log.level` nested."""
    for key, value in fields.items():
        if key.lower() in _JSON_KEYS:
            found = _value_level(value)
            if found is not None:
                return found
    log = fields.get("log")
    if isinstance(log, Mapping):
        for key, value in log.items():
            if key.lower() == "level":
                return _value_level(value)
    return None


def _value_level(value: Any) -> bytes | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _PINO.get(value) or (str(value).encode() if -999 <= value <= 999 else None)
    if isinstance(value, str) and 0 < len(value) <= MAX_LEVEL_BYTES:
        return normalise(value.encode())
    return None


def _json_level(message: bytes) -> bytes | None:
    """A JSON line whose first key is not "level": the bytes when that is safe, else parsed."""
    m = _JSON_LEVEL.search(message, 1)
    if m is None and b'"log"' not in message:
        return None
    if m is not None:
        start = m.start()
        # No object opened or closed before the key: it is a top-level key.
        if message.find(b"{", 1, start) < 0 and message.find(b"}", 1, start) < 0:
            return _json_value(m)
    # Nested objects, braces inside strings, or `log: {level}`: let the JSON parser decide.
    try:
        fields = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return level_of_fields(fields) if isinstance(fields, dict) else None


def _json_value(m: re.Match[bytes]) -> bytes | None:
    text = m.group(1)
    if text is not None:
        return normalise(text)
    number = int(m.group(2))
    return _PINO.get(number) or str(number).encode()
