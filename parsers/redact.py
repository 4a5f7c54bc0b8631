"""Redaction: secrets in a message (or in parsed JSON values) replaced by a marker.

Built-in rules, switched on by name:
  authorization  the credentials of `Authorization:` headers (the scheme is kept:
                 `Authorization: Bearer [REDACTED]`) and of a bare `Bearer <token>`
  passwords      values of password, passwd, pwd, passphrase, secret, token, credential(s),
                 api/access/secret/private/auth key style keys, including prefixed ones
                 (`db_password`, `csrf_token`), as `key=value`, `key: value` and
                 `"key":"value"`, and the password of a URL (`postgres://app:[REDACTED]@db`)
  credit_cards   13 to 19 digits, single spaces or dashes allowed between them, starting
                 with 2-6 (the card networks' ranges), and only when they pass the Luhn check
Custom rules are regular expressions with a replacement (`\\1` refers to a group; the
marker when empty), applied after the built-ins.

A cheap gate comes first: the built-ins only run on a message that holds one of their
trigger words (looked up in the lower-cased message) or a long digit run, so a line with
nothing to redact costs a few substring searches. Redacting is idempotent: what a rule
writes is never matched again by the built-ins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MARKER = "[REDACTED]"
BUILTINS = ("authorization", "passwords", "credit_cards")

_SCHEMES = r"(?:bearer|basic|digest|token|negotiate|apikey|aws4-hmac-sha256)"
_SECRET_KEY = (
    r"[\w.-]*?(?:password|passwd|passphrase|pwd|secret|token|credentials?"
    r"|(?:api|access|secret|private|auth)[_-]?key)"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern and what replaces its matches (bytes and text versions of both)."""

    name: str
    pattern: re.Pattern[bytes]
    text_pattern: re.Pattern[str]
    replace: bytes | Callable[[re.Match[bytes]], bytes]
    text_replace: str | Callable[[re.Match[str]], str]
    # Lower-case words one of which a message must hold for the rule to be tried; empty:
    # always tried. `gate` (a regex) does the same for what words cannot say.
    triggers: tuple[bytes, ...] = ()
    gate: re.Pattern[bytes] | None = None


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
        digits = run[:end].replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn(digits):
            return marker + run[end:]
    return run


def _both(source: str, flags: int = 0) -> tuple[re.Pattern[bytes], re.Pattern[str]]:
    return re.compile(source.encode(), flags), re.compile(source, flags)


def _keeping(groups: int, marker: str) -> tuple[bytes, str]:
    """A template keeping groups 1..n before the marker (backslashes in it kept literal)."""
    head = "".join(f"\\g<{i}>" for i in range(1, groups + 1))
    text = head + marker.replace("\\", "\\\\")
    return text.encode(), text


def builtin_rules(names: Iterable[str], marker: str = DEFAULT_MARKER) -> list[Rule]:
    """The built-in rules named (in the order of BUILTINS); ValueError on an unknown name."""
    wanted = set(names)
    unknown = wanted - set(BUILTINS)
    if unknown:
        raise ValueError(f"unknown redaction rules {sorted(unknown)}; known: {BUILTINS}")
    rules: list[Rule] = []
    if "authorization" in wanted:
        keep2, keep2_text = _keeping(2, marker)
        triggers = (b"authorization", b"bearer")
        for name, source in (
            # "Authorization: Bearer x", authorization=Basic x; JSON: "authorization":"Bearer x"
            ("authorization", rf"(\bauthorization[\"']?[ \t]*[:=][ \t]*[\"']?)({_SCHEMES}[ \t]+)?"
             r"[^\s\"',;&]+"),
            # a bearer token anywhere: a run with a digit or a token character in it
            ("bearer", r"(\b)(bearer[ \t]+)(?=[A-Za-z\-._~+/]*[0-9._~+/-])"
             r"[A-Za-z0-9\-._~+/]{8,}=*"),
        ):  # fmt: skip
            binary, text = _both(source, re.IGNORECASE)
            rules.append(Rule(name, binary, text, keep2, keep2_text, triggers))
    if "passwords" in wanted:
        triggers = (b"pass", b"pwd", b"secret", b"token", b"key", b"credential")
        keep3, keep3_text = _keeping(3, marker)
        keep4, keep4_text = _keeping(4, marker)
        # "password": "x" / 'secret': 'x' (JSON, Python reprs): the value inside its quotes
        binary, text = _both(
            rf"([\"'])({_SECRET_KEY})(\1[ \t]*:[ \t]*)([\"'])(?:(?!\4)[^\\]|\\.)+(?=\4)",
            re.IGNORECASE,
        )
        rules.append(Rule("passwords", binary, text, keep4, keep4_text, triggers))
        # password=x, token: x, secret="x y", secret='x' (logfmt, query strings, headers, YAML);
        # a value that is the marker already is left alone, so redacting twice changes nothing
        binary, text = _both(
            rf"(?<![\w.\-\"'])({_SECRET_KEY})([ \t]*[=:][ \t]*)([\"'])?"
            rf"(?!{re.escape(marker)}(?:[\s&,;\"'<>)\]}}]|$))"
            r"(?(3)(?:(?!\3)[^\\]|\\.)+(?=\3)|[^\s&,;\"'<>)\]}]+)",
            re.IGNORECASE,
        )
        rules.append(Rule("passwords", binary, text, keep3, keep3_text, triggers))
        # the password of a URL: scheme://user:password@host
        binary, text = _both(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]+)(:)[^\s/@]+(?=@)", re.IGNORECASE)
        keep2, keep2_text = _keeping(2, marker)
        rules.append(Rule("passwords", binary, text, keep2, keep2_text, (b"://",)))
    if "credit_cards" in wanted:
        # 13-19 digits in one run, or in groups as cards are printed (4-4-4-4, 4-6-5, ...)
        # with one kind of separator; the first digit in the card networks' range 2-6
        binary, text = _both(
            r"(?<![\w-])[2-6](?:[0-9]{12,18}|[0-9]{3}([ -])[0-9]{3,6}(?:\1[0-9]{1,6}){1,4})"
            r"(?![\w-])"
        )

        def card(m: re.Match[bytes]) -> bytes:
            return _cards(m.group().decode(), marker).encode()

        def card_text(m: re.Match[str]) -> str:
            return _cards(m.group(), marker)

        rules.append(Rule("credit_cards", binary, text, card, card_text, gate=binary))
    return rules


def custom_rule(
    name: str, pattern: str, replacement: str = "", marker: str = DEFAULT_MARKER
) -> Rule:
    """A rule from configuration: `pattern` replaced by `replacement` (or the marker)."""
    binary, text = _both(pattern)
    repl = replacement or marker.replace("\\", "\\\\")
    return Rule(name, binary, text, repl.encode(), repl)


_KEY = re.compile(_SECRET_KEY + "$", re.IGNORECASE)


class Redactor:
    """Applies rules to messages and JSON values. With `secret_keys` (the `passwords`
    rule), a parsed JSON object's secret-looking keys have their whole value replaced."""

    def __init__(
        self, rules: list[Rule], marker: str = DEFAULT_MARKER, secret_keys: bool = False
    ) -> None:
        self.rules = rules
        self.marker = marker
        self.secret_keys = secret_keys
        # Consecutive rules with the same gate share one check.
        self._gated: list[tuple[tuple[bytes, ...], re.Pattern[bytes] | None, list[Rule]]] = []
        for rule in rules:
            if self._gated and self._gated[-1][:2] == (rule.triggers, rule.gate):
                self._gated[-1][2].append(rule)
            else:
                self._gated.append((rule.triggers, rule.gate, [rule]))

    def redact(self, message: bytes) -> tuple[bytes, bool]:
        """The message with every match replaced, and whether anything was."""
        lower = None
        out = message
        for triggers, gate, rules in self._gated:
            if triggers:
                if lower is None:
                    lower = message.lower()
                if not any(t in lower for t in triggers):
                    continue
            elif gate is not None and gate.search(out) is None:
                continue
            for rule in rules:
                out = rule.pattern.sub(rule.replace, out)
        if out is message:
            return message, False
        return out, out != message

    def redact_text(self, text: str) -> tuple[str, bool]:
        """The same for a str (a parsed JSON string value)."""
        out = text
        for rule in self.rules:
            out = rule.text_pattern.sub(rule.text_replace, out)
        return out, out != text

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
