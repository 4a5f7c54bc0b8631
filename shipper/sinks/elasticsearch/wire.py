"""HTTP/1.1 messages on asyncio streams, for the transport: one response read (Content-Length,
chunked, or to the close; gzip or deflate decoded), a request body written, gzipped, measured,
and the query string of a request.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Sequence
from urllib.parse import quote

SLICE_PIECES = 512  # a body given in pieces is written this many at a time (~256 KiB)

# A request body: bytes, or its pieces in order (a bulk request's NDJSON entries): written
# a slice at a time, never joined whole, so a request in flight costs no copy of its body.
Body = bytes | Sequence[bytes]


async def read_response(
    reader: asyncio.StreamReader, method: str, raw: bytes = b""
) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, keep-alive) of one HTTP/1.1 response (`raw`: its head, if
    already read)."""
    raw = raw or await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {lines[0][:60]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
        keep = False
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate") and body:
        body = zlib.decompress(body, 47)  # gzip or zlib header, detected
    return status, headers, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(str(v), safe=',*')}" for k, v in params.items())


def length(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


async def write_body(writer: asyncio.StreamWriter, body: Body) -> None:
    if isinstance(body, bytes):
        writer.write(body)
        return
    for at in range(0, len(body), SLICE_PIECES):
        writer.write(b"".join(body[at : at + SLICE_PIECES]))
        await writer.drain()


def gzipped(body: Body) -> bytes:
    if isinstance(body, bytes):
        return gzip.compress(body, compresslevel=1)
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing
    return b"".join([*(packer.compress(part) for part in body), packer.flush()])
