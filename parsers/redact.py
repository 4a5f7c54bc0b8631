"""Redaction: secrets in a message (or in parsed JSON values) replaced by a marker.

Built-in rules, switched on by name:
  authorization  the credentials of `Authorization:` headers (the scheme is kept:
                 `Authorization: Bearer [REDACTED]`) and of a bare `Bearer <token>`
  passwords      values of password, passwd, pwd, passphrase, secret, token, credential(s)
                 and api/access/secret/private/auth key style keys, prefixed ones too
                 (`db_password`, `csrf_token`), as `key=value`, `key: value` and
                 `"key":"value"`, and the password of a URL (`postgres://app:[REDACTED]@db`)
  credit_cards   13 to 19 digits, in one run or in groups as cards are printed (one kind
                 of separator, space or dash), starting with 2-6 (the card networks'
                 ranges), and only when they pass the Luhn check
Custom rules are regular expressions with a replacement (`\\1` refers to a group; the
marker when empty), applied after the built-ins.

Cost: the built-ins never scan a message with a regex. Each looks for its words in the
lower-cased message (`bytes.find`, in C) and matches its pattern only where one is, and
the card rule first counts digits; a line with nothing to redact costs one lower() and a
few finds. Redacting is idempotent: what a built-in writes is never matched again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, AnyStr

DEFAULT_MARKER = "[REDACTED]"
BUILTINS = ("authorization", "passwords", "credit_cards")

_SCHEMES = r"(?:bearer|basic|digest|token|negotiate|apikey|aws4-hmac-sha256)"
_KEY_WORDS = ("pass", "pwd", "secret", "token", "credential", "key")  # what key names hold
# "key" is a secret key's last word after one of these (api_key, accessKey, privateKey).
_KEY_OWNERS = ("api", "access", "secret", "private", "auth")
_KEY_TAIL = (
    "(?:"
    + "|".join(f"(?<=(?i:{o}){sep})" for o in _KEY_OWNERS for sep in ("", "[_-]"))
    + ")(?i:key)"
)
_SECRET_KEY = (
    r"(?i:password|passwd|passphrase|pwd|secret|token|credentials?"
    r"|(?:api|access|secret|private|auth)[_-]?key)"
)
_DIGITS = b"0123456789"


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern, compiled for bytes (messages) and str (parsed JSON values).

    Built-ins are anchored: `anchors` are lower-case words, the pattern is matched where
    one of them starts, and its `secret` group is replaced by the marker; `transform`
    (cards) instead maps the whole match to its replacement. A custom rule has no anchors
    and is substituted with `replacement` everywhere.
    """

    name: str
    pattern: re.Pattern[bytes]
    text_pattern: re.Pattern[str]
    anchors: tuple[str, ...] = ()
    replacement: str = ""
    transform: Callable[[str], str] | None = None
    min_digits: int = 0
    separated: bool = False  # only where the message holds a = or a :
    binary_anchors: tuple[bytes, ...] = ()


def luhn(digits: str) -> bool:
    """The Luhn checksum of a string of digits (what card numbers satisfy)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards(run: str, marker: str) -> str:
    """A card-like run with the card number at its start replaced: the longest stretch of
    whole groups, 13 to 19 digits, that passes Luhn (`4111 1111 1111 1111 2000` is a card
    and an amount); the run as it was when none does."""
    ends = [i for i, ch in enumerate(run) if ch in " -"] + [len(run)]
    for end in reversed(ends):
        groups = run[:end].replace("-", " ").split(" ")
        digits = "".join(groups)
        if 13 <= len(digits) <= 19 and _printed_as_card(groups) and luhn(digits):
            return marker + run[end:]
    return run


def _printed_as_card(groups: list[str]) -> bool:
    """One run of digits, groups of four (the last one shorter), or the 4-6-5 and 4-6-4
    groups of Amex and Diners cards: `5000 5597 9999 4 200` is a card and a number."""
    sizes = [len(g) for g in groups]
    if len(sizes) == 1 or sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _rule(name: str, source: str, anchors: tuple[str, ...] = (), **rest: Any) -> Rule:
    binary = tuple(a.encode() for a in anchors)
    compiled = re.compile(source.encode()), re.compile(source)
    return Rule(name, *compiled, anchors, binary_anchors=binary, **rest)


def builtin_rules(names: Iterable[str], marker: str = DEFAULT_MARKER) -> list[Rule]:
    """The built-in rules named (in the order of BUILTINS); ValueError on an unknown name."""
    wanted = set(names)
    unknown = wanted - set(BUILTINS)
    if unknown:
        raise ValueError(f"unknown redaction rules {sorted(unknown)}; known: {BUILTINS}")
    # A value that is the marker already is left alone, so redacting twice changes nothing.
    fresh = rf"(?!{re.escape(marker)}(?:[\s&,;\"'<>)\]}}]|$))"
    rules: list[Rule] = []
    if "authorization" in wanted:
        rules.append(
            _rule(  # Authorization: Bearer x, authorization=Basic x, "authorization":"Bearer x"
                "authorization",
                rf"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?>(?:(?i:{_SCHEMES})[ \t]+)?)"
                rf"{fresh}(?P<secret>[^\s\"',;&]+)",
                ("authorization",),
                separated=True,
            )
        )
        rules.append(
            _rule(  # a bearer token anywhere: a run with a digit or a token character in it
                "authorization",
                r"(?<![A-Za-z0-9_])(?i:bearer)[ \t]+(?=[A-Za-z\-._~+/]*[0-9._~+/-])"
                r"(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
                ("bearer",),
            )
        )
    if "passwords" in wanted:
        rules.append(
            _rule(  # password=x, "db_password": "x", token: x, secret='x y', apiKey=x
                "passwords",
                r"(?:(?i:password|passwd|passphrase|pwd|secret|token|credentials?)|"
                rf"{_KEY_TAIL})[\"']?[ \t]*[=:][ \t]*(?P<quote>[\"'])?{fresh}"
                r"(?P<secret>(?(quote)(?:(?!(?P=quote))[^\\]|\\.)+(?=(?P=quote))"
                r"|[^\s&,;\"'<>)\]}]+))",
                _KEY_WORDS,
                separated=True,
            )
        )
        rules.append(
            _rule(  # the password of a URL: scheme://user:password@host
                "passwords",
                rf"://[^\s/:@]+:{fresh}(?P<secret>[^\s/@]+)(?=@)",
                ("://",),
                separated=True,
            )
        )
    if "credit_cards" in wanted:
        rules.append(
            _rule(  # one run, or groups as printed (4-4-4-4, 4-6-5, ...) with one separator
                "credit_cards",
                r"(?<![\w-])[2-6](?:[0-9]{12,18}|[0-9]{3}([ -])[0-9]{3,6}(?:\1[0-9]{1,6}){1,4})"
                r"(?![\w-])",
                transform=lambda run: _cards(run, marker),
                min_digits=13,
            )
        )
    return rules


def custom_rule(
    name: str, pattern: str, replacement: str = "", marker: str = DEFAULT_MARKER
) -> Rule:
    """A rule from configuration: `pattern` replaced by `replacement` (or the marker)."""
    return _rule(name, pattern, replacement=replacement or marker.replace("\\", "\\\\"))


_KEY = re.compile(rf"[\w.-]*{_SECRET_KEY}$")


_ANCHORED, _TRANSFORM, _SUB = 0, 1, 2
# One step of a plan: (what kind, only with = or :, pattern, anchor words, transform or
# replacement, digits needed), for bytes or for str.
_Step = tuple[int, bool, Any, tuple[Any, ...], Any, int]


class Redactor:
    """Applies rules to messages and JSON values. With `secret_keys` (the `passwords`
    rule), a parsed JSON object's secret-looking keys have their whole value replaced."""

    def __init__(
        self, rules: list[Rule], marker: str = DEFAULT_MARKER, secret_keys: bool = False
    ) -> None:
        self.rules = rules
        self.marker = marker
        self.secret_keys = secret_keys
        self._marker = marker.encode()
        self._binary = [_step(rule, binary=True) for rule in rules]
        self._text = [_step(rule, binary=False) for rule in rules]

    def redact(self, message: bytes) -> tuple[bytes, bool]:
        """The message with every match replaced, and whether anything was."""
        out = _run(self._binary, message, self._marker, message.lower(), _digits_of_bytes)
        return out, out is not message and out != message

    def redact_text(self, text: str) -> tuple[str, bool]:
        """The same for a str (a parsed JSON string value)."""
        out = _run(self._text, text, self.marker, _lower_text(text), _digits_of_text)
        return out, out is not text and out != text

    def redact_fields(self, value: Any) -> tuple[Any, bool]:
        """A parsed JSON value with every string redacted, copied only where it changed."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            out: dict[str, Any] | None = None
            for key, item in value.items():
                if self.secret_keys and _is_secret(key, item):
                    new, changed = self.marker, item != self.marker
                else:
                    new, changed = self.redact_fields(item)
                if changed:
                    if out is None:
                        out = dict(value)
                    out[key] = new
            return (value, False) if out is None else (out, True)
        if isinstance(value, list):
            items = [self.redact_fields(item) for item in value]
            if any(changed for _, changed in items):
                return [new for new, _ in items], True
        return value, False


def _step(rule: Rule, binary: bool) -> _Step:
    pattern = rule.pattern if binary else rule.text_pattern
    if rule.anchors:
        words = rule.binary_anchors if binary else rule.anchors
        return (_ANCHORED, rule.separated, pattern, words, None, 0)
    if rule.transform is not None:
        transform = rule.transform
        if binary:
            replace: Any = lambda m: transform(m.group().decode()).encode()  # noqa: E731
        else:
            replace = lambda m: transform(m.group())  # noqa: E731
        return (_TRANSFORM, rule.separated, pattern, (), replace, rule.min_digits)
    text = rule.replacement.encode() if binary else rule.replacement
    return (_SUB, rule.separated, pattern, (), text, 0)


def _digits_of_bytes(message: bytes) -> int:
    return len(message) - len(message.translate(None, _DIGITS))


def _digits_of_text(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower_text(text: str) -> str:
    """ASCII letters lowered only, so positions stay those of `text` (str.lower() may not)."""
    return text.translate(_ASCII_LOWER)


def _run(
    plan: list[_Step],
    message: AnyStr,
    marker: AnyStr,
    lower: AnyStr,
    count_digits: Callable[[AnyStr], int],
) -> AnyStr:
    """Every step in turn; anchored ones only where their words are."""
    separated = None
    original = message
    for kind, needs_separator, pattern, words, arg, digits in plan:
        if needs_separator:
            if separated is None:
                separated = any(sep in message for sep in _SEPARATORS[type(message)])
            if not separated:
                continue
        if kind == _ANCHORED:
            spans = []
            for word in words:
                at = lower.find(word)
                while at >= 0:
                    m = pattern.match(message, at)
                    if m is not None:
                        spans.append(m.span("secret"))
                    at = lower.find(word, at + 1)
            if not spans:
                continue
            out = _splice(message, spans, marker)
        elif kind == _TRANSFORM:
            if count_digits(message) < digits:
                continue
            out = pattern.sub(arg, message)
        else:
            out = pattern.sub(arg, message)
        if out is not message:
            message = out
            lower = out.lower() if isinstance(out, bytes) else _lower_text(out)
    return message if message != original else original


_SEPARATORS: dict[type, tuple[Any, ...]] = {bytes: (b"=", b":"), str: ("=", ":")}


def _splice(message: AnyStr, spans: list[Any], marker: AnyStr) -> AnyStr:
    parts = []
    done = 0
    for start, end in sorted(spans):
        if start < done:  # overlapping matches (a secret key inside another's value)
            continue
        parts += [message[done:start], marker]
        done = end
    parts.append(message[done:])
    return message[:0].join(parts)


def _is_secret(key: Any, item: Any) -> bool:
    """A scalar under a key such as password, db_password, apiKey."""
    scalar = isinstance(item, str | int | float) and not isinstance(item, bool)
    return scalar and isinstance(key, str) and _KEY.match(key) is not None


def redactor(
    builtins: Iterable[str],
    custom: Iterable[tuple[str, str, str]] = (),
    marker: str = DEFAULT_MARKER,
) -> Redactor | None:
    """The redactor for these built-ins and custom (name, pattern, replacement) rules; None
    when there are no rules at all (so callers can skip the stage)."""
    names = list(builtins)
    rules = builtin_rules(names, marker) + [custom_rule(*c, marker=marker) for c in custom]
    if not rules:
        return None
    return Redactor(rules, marker, secret_keys="passwords" in names)
