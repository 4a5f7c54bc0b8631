"""Per-event cost of the message stages (level detection, redaction) on the mixed workload.

The events are those the daemon decodes from `bench.loadgen.mixed_tree` (plain, JSON and
Java pods, both runtimes, stack traces joined for the Java pods); each stage is timed in
process, in CPU time, beside decoding and encoding the same events, so the figures can be
compared on a machine whose speed is not known (or is shared).

    python -m bench.messages
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.loadgen import mixed_tree
from parsers.decoder import DecoderOptions, FileDecoder
from parsers.events import LogEvent
from parsers.level import detect_level
from parsers.multiline import BUILTIN
from parsers.redact import BUILTINS, redactor
from shipper.document import DocumentEncoder


def mixed_events(lines: int = 20_000) -> tuple[list[tuple[bytes, bool]], list[LogEvent]]:
    """(file contents, whether Java) of a mixed tree, and the events they decode to."""
    with tempfile.TemporaryDirectory() as tmp:
        mixed_tree(Path(tmp), lines)
        files = [
            (p.read_bytes(), "java" in p.parent.parent.name)
            for p in sorted(Path(tmp, "var/log/pods").glob("*/*/0.log"))
        ]
    events = [e for data, java in files for e in _decode(data, java)]
    return files, events


def _decode(data: bytes, java: bool) -> list[LogEvent]:
    decoder = FileDecoder(DecoderOptions(multiline=BUILTIN["java"] if java else None))
    return decoder.feed(0, data, 0.0) + decoder.flush_all(0.0)


def cpu_per_event(work: Callable[[], object], count: int, repeat: int = 5) -> float:
    """Best of `repeat` runs of `work`, in CPU nanoseconds per event."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best / count * 1e9


def run(lines: int = 20_000) -> dict[str, float]:
    files, events = mixed_events(lines)
    messages = [e.message for e in events]
    encoder = DocumentEncoder(path="/var/log/containers/x.log", metadata=b'"k":1', actions=True)
    redact = redactor(BUILTINS)
    assert redact is not None

    def decode_encode() -> None:
        for data, java in files:
            encoder.encode(_decode(data, java), b"", [])

    def levels() -> None:
        for m in messages:
            detect_level(m)

    def redaction() -> None:
        for m in messages:
            redact.redact(m)

    def loop() -> None:
        for _m in messages:
            pass

    n = len(events)
    base = cpu_per_event(decode_encode, n)
    empty = cpu_per_event(loop, n)
    level = cpu_per_event(levels, n) - empty
    red = cpu_per_event(redaction, n) - empty
    found = Counter(detect_level(m) for m in messages)
    return {
        "events": n,
        "decode_encode_ns_per_event": base,
        "level_ns_per_event": level,
        "level_share_of_decode_encode": level / base,
        "redact_all_builtins_ns_per_event": red,
        "redact_share_of_decode_encode": red / base,
        "events_with_a_level": (n - found[None]) / n,
    }


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name}: {value:,.3f}" if isinstance(value, float) else f"{name}: {value:,}")
