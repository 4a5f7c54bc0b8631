"""Redaction: built-in and custom rules, on messages and parsed JSON; idempotent, exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.redact import BUILTINS, custom_rule, luhn, redactor

ALL = redactor(BUILTINS)
CARD = "4111 1111 1111 1111"  # the well-known test number (passes Luhn)

EXAMPLES = [
    # authorization
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2ln",
        "Authorization: Bearer [REDACTED]",
    ),
    ("authorization=Basic dXNlcjpwYXNz; next", "authorization=Basic [REDACTED]; next"),
    (
        'headers={"Authorization":"Bearer abc.def.123"}',
        'headers={"Authorization":"Bearer [REDACTED]"}',
    ),
    (
        "curl -H 'Authorization: token ghp_abcdef123456'",
        "curl -H 'Authorization: token [REDACTED]'",
    ),
    ("upstream got Bearer abc123def456ghi", "upstream got Bearer [REDACTED]"),
    ("using bearer authentication for the api", None),
    ("the bearer of bad news", None),
    # passwords
    ("login password=hunter2 user=bob", "login password=[REDACTED] user=bob"),
    ("db_password: s3cr3t", "db_password: [REDACTED]"),
    ('{"user":"bob","password":"it\'s me","n":1}', '{"user":"bob","password":"[REDACTED]","n":1}'),
    ('{"Client_Secret": "a\\"b"}', '{"Client_Secret": "[REDACTED]"}'),
    ("{'token': 'abc'}", "{'token': '[REDACTED]'}"),
    ('secret="two words" next', 'secret="[REDACTED]" next'),
    (
        "GET /cb?code=1&access_token=ya29.a0Af&state=x",
        "GET /cb?code=1&access_token=[REDACTED]&state=x",
    ),
    (
        "apiKey: abc, privateKey=zzz, passwd=p",
        "apiKey: [REDACTED], privateKey=[REDACTED], passwd=[REDACTED]",
    ),
    ("dsn postgres://app:hunter2@db:5432/app", "dsn postgres://app:[REDACTED]@db:5432/app"),
    ("token expired for user 42", None),
    ("max_tokens=100 tokens=5 token_count=7 monkey=3", None),
    ("password_file=/etc/secret/pw secret_name=db", None),
    ("Password reset email sent", None),
    ("https://example.com/path@v2", None),
    # credit cards
    (f"paid with {CARD} ok", "paid with [REDACTED] ok"),
    ("card 4111-1111-1111-1111,", "card [REDACTED],"),
    ("amex 378282246310005 visa13 4222222222222", "amex [REDACTED] visa13 [REDACTED]"),
    ("card 4111-1111-1111-1112 is not a valid number", None),
    ("order 1733047200123456789 at 1733047200123", None),  # epoch ns and ms start with 1
    ("id 41111111111111110000 has twenty digits", None),
    ("uuid 4111111111111111-abcd", None),
    ("on 2026-12-01 10:00:00.123456 UTC", None),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES, ids=[t[:40] for t, _ in EXAMPLES])
def test_builtin_rules(text, expected):
    out, changed = ALL.redact(text.encode())
    assert out == (expected or text).encode()
    assert changed is (expected is not None)


def test_each_builtin_only_does_its_own_job():
    only_cards = redactor(["credit_cards"])
    assert only_cards.redact(b"password=x " + CARD.encode()) == (b"password=x [REDACTED]", True)
    only_passwords = redactor(["passwords"])
    assert only_passwords.redact(b"Bearer abcdef123456 password=x")[0] == (
        b"Bearer abcdef123456 password=[REDACTED]"
    )
    with pytest.raises(ValueError, match="unknown redaction rules"):
        redactor(["emails"])
    assert redactor([]) is None


def test_a_line_with_nothing_to_redact_is_returned_as_it_is():
    line = b"12345 GET /order cart user session cache query upstream retry timeout healthy"
    out, changed = ALL.redact(line)
    assert out is line and changed is False


def test_custom_rules_with_groups_and_the_marker():
    r = redactor(
        [],
        [("sid", r"(sid=)[0-9a-f]{8,}", r"\1<sid>"), ("ssn", r"\b\d{3}-\d{2}-\d{4}\b", "")],
        marker="***",
    )
    assert r.redact(b"sid=deadbeef00 ssn 123-45-6789 ok") == (b"sid=<sid> ssn *** ok", True)
    literal = redactor([], [("x", "a", "")], marker="\\1")  # a marker is text, not a template
    assert literal.redact(b"a") == (b"\\1", True)
    assert custom_rule("x", "b").replacement == "[REDACTED]"


def test_parsed_json_values_are_redacted_and_copied_only_where_changed():
    fields = {
        "user": "bob",
        "password": "hunter2",
        "retries": 3,
        "nested": {"apiKey": 12345, "msg": "Bearer abcdef123456", "enabled": True},
        "cards": [CARD, "none"],
        "untouched": {"a": "b"},
    }
    out, changed = ALL.redact_fields(fields)
    assert changed
    assert out == {
        "user": "bob",
        "password": "[REDACTED]",
        "retries": 3,
        "nested": {"apiKey": "[REDACTED]", "msg": "Bearer [REDACTED]", "enabled": True},
        "cards": ["[REDACTED]", "none"],
        "untouched": {"a": "b"},
    }
    assert out["untouched"] is fields["untouched"]
    assert fields["password"] == "hunter2"  # the input is not modified
    clean = {"a": ["b", {"c": 1}]}
    assert ALL.redact_fields(clean) == (clean, False)
    assert ALL.redact_fields(clean)[0] is clean


# ---- properties ----------------------------------------------------------------------------

# Filler words that hold no trigger of any rule.
FILLER = [
    "order",
    "cart",
    "GET",
    "/api/v1/orders",
    "200",
    "latency_ms=12",
    "user=42",
    "ok",
    "-",
    "(x)",
]
filler = st.lists(st.sampled_from(FILLER), max_size=8).map(" ".join)
secret_values = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.+/", min_size=1, max_size=30
)


@given(
    before=filler,
    after=filler,
    key=st.sampled_from(["password", "db_password", "token", "apiKey", "secret"]),
    value=secret_values,
)
def test_only_the_secret_changes(before, after, key, value):
    line = f"{before} {key}={value} {after}".encode()
    out, changed = ALL.redact(line)
    assert out == f"{before} {key}=[REDACTED] {after}".encode()
    assert changed


def card_number(body: list[int]) -> str:
    """`body` (the first digits) completed with the check digit that makes it pass Luhn."""
    for check in range(10):
        digits = "".join(map(str, [*body, check]))
        if luhn(digits):
            return digits
    raise AssertionError("some check digit always fits")


card_bodies = st.tuples(
    st.integers(2, 6), st.lists(st.integers(0, 9), min_size=11, max_size=17)
).map(lambda t: [t[0], *t[1]])


@given(body=card_bodies, sep=st.sampled_from(["", " ", "-"]), before=filler, after=filler)
def test_a_card_number_passing_luhn_is_redacted_and_nothing_else(body, sep, before, after):
    number = card_number(body)
    written = sep.join(number[i : i + 4] for i in range(0, len(number), 4))
    if after[:1].isdigit():
        # "4111 1111 1111 1111 200" may itself be a 19-digit card (the longest stretch
        # passing Luhn is taken): a word keeps the number after it apart
        after = f"ok {after}"
    out, changed = ALL.redact(f"{before} {written} {after}".encode())
    assert out == f"{before} [REDACTED] {after}".encode() and changed


@given(body=card_bodies, at=st.integers(0, 18), delta=st.integers(1, 9))
def test_changing_one_digit_breaks_luhn_and_the_number_is_kept(body, at, delta):
    number = card_number(body)
    at %= len(number)
    wrong = number[:at] + str((int(number[at]) + delta) % 10) + number[at + 1 :]
    assert not luhn(wrong)
    if wrong[0] in "23456":
        assert ALL.redact(f"pay {wrong} now".encode()) == (f"pay {wrong} now".encode(), False)


@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_luhn_agrees_with_the_textbook_definition(digits):
    doubled = [
        (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
        for i, d in enumerate(int(c) for c in reversed(digits))
    ]
    assert luhn(digits) is (sum(doubled) % 10 == 0)


pieces = st.one_of(
    filler,
    st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(["password", "token", "secret"]), secret_values
    ),
    st.builds(lambda v: f'"password":"{v}"', secret_values),
    st.builds(lambda v: f"Authorization: Bearer {v}9", secret_values),
    st.builds(lambda b: card_number(b), card_bodies),
    st.text(max_size=40),
)


@given(parts=st.lists(pieces, max_size=6))
def test_redacting_twice_changes_nothing_more(parts):
    once, _ = ALL.redact(" ".join(parts).encode())
    twice, changed = ALL.redact(once)
    assert twice == once and not changed


@given(text=st.text(max_size=200))
def test_text_and_bytes_versions_agree(text):
    assert ALL.redact_text(text)[0].encode() == ALL.redact(text.encode())[0]
