"""Parse throughput: 250-byte CRI lines through the per-file decoder, in lines per CPU-second."""

from __future__ import annotations

import random
import time

from parsers.decoder import FileDecoder
from shipper.document import DocumentEncoder


def cri_block(lines: int, length: int = 250, seed: int = 7) -> bytes:
    """`lines` CRI lines of exactly `length` bytes (newline included), varied text."""
    rng = random.Random(seed)
    words = [
        b"GET",
        b"POST",
        b"/api/v1/orders",
        b"200",
        b"404",
        b"latency_ms=12",
        b"user=42",
        b"cache",
        b"miss",
        b"upstream",
        b"timeout",
        b"retrying",
        b"ok",
    ]
    out = bytearray()
    for i in range(lines):
        head = b"2024-03-01T10:%02d:%02d.%09dZ stdout F " % (i // 60 % 60, i % 60, i)
        body = bytearray()
        while len(head) + len(body) < length - 1:
            body += rng.choice(words) + b" "
        line = head + bytes(body[: length - 1 - len(head)]) + b"\n"
        out += line
    return bytes(out)


def measure(block: bytes, repeat: int, encode: bool = False) -> tuple[int, float]:
    """(lines, CPU seconds) for decoding (and optionally encoding) `block` `repeat` times."""
    lines = block.count(b"\n") * repeat
    encoder = DocumentEncoder(
        path="/var/log/containers/x.log",
        metadata=b'"k":1',
        actions=True,
        id_prefix=b"0123456789abcdef0123",
    )
    started = time.process_time()
    for r in range(repeat):
        decoder = FileDecoder()
        events = decoder.feed(r * len(block), block, 0.0)
        if encode:
            out: list[bytes] = []
            encoder.encode(events, b"", out)
    return lines, time.process_time() - started


def run() -> dict[str, float]:
    block = cri_block(20_000)
    measure(block, 2)  # warm-up
    lines, cpu = measure(block, 25)
    lines_e, cpu_e = measure(block, 25, encode=True)
    return {
        "parse_lines_per_cpu_second": lines / cpu,
        "parse_and_encode_lines_per_cpu_second": lines_e / cpu_e,
    }


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name}: {value:,.0f}")
