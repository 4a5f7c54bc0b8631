"""Writing documents as NDJSON to a stream: the embedded default and `shipper tail`."""

from __future__ import annotations

import sys
import zlib
from typing import Any, BinaryIO

import click
import orjson

from shipper.document import DocumentEncoder
from shipper.sinks.base import Acknowledge, Batch


class StreamSink:
    """Writes each document as one JSON line and acknowledges once it is flushed."""

    def __init__(self, ack: Acknowledge, stream: BinaryIO | None = None) -> None:
        self._ack = ack
        self._stream = stream if stream is not None else sys.stdout.buffer

    def encoder(self, path: str, metadata: bytes, id_prefix: bytes) -> DocumentEncoder:
        return DocumentEncoder(path=path, metadata=metadata)

    async def start(self) -> None:
        return None

    async def send(self, batch: Batch) -> None:
        self.write(batch.entries)
        self._ack(batch)

    def write(self, entries: list[bytes]) -> None:
        try:
            self._stream.write(b"".join(entries))
            self._stream.flush()
        except BrokenPipeError:
            # `shipper tail | head`: the reader left; nothing more to show.
            raise SystemExit(0) from None

    async def drain(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def fatal(self) -> BaseException | None:
        return None


class PrettySink(StreamSink):
    """One readable line per record for people: time, namespace/pod[container], message."""

    def __init__(self, ack: Acknowledge, stream: BinaryIO | None = None, color: bool = True):
        super().__init__(ack, stream)
        self._color = color

    def write(self, entries: list[bytes]) -> None:
        super().write([self.format(orjson.loads(e)) for e in entries])

    def format(self, doc: dict[str, Any]) -> bytes:
        kube = doc.get("kubernetes") or {}
        ts = str(doc.get("@timestamp", ""))
        when = ts[11:23] if len(ts) >= 23 else ts
        if kube:
            source = f"{kube.get('namespace', '?')}/{kube.get('pod', {}).get('name', '?')}"
            source += f"[{kube.get('container', {}).get('name', '?')}]"
        else:
            source = doc.get("log", {}).get("file", {}).get("path", "?")
        flags = doc.get("log", {}).get("flags") or []
        stream = doc.get("stream", "")
        message = str(doc.get("message", ""))
        mark = f" ({', '.join(flags)})" if flags else ""
        if self._color:
            hue = _COLORS[zlib.crc32(source.encode()) % len(_COLORS)]
            when = click.style(when, dim=True)
            source = click.style(source, fg=hue)
            if stream == "stderr":
                message = click.style(message, fg="red")
            if mark:
                mark = click.style(mark, fg="yellow")
        return f"{when} {source}{mark} {message}\n".encode()


_COLORS = (
    "cyan",
    "green",
    "magenta",
    "blue",
    "yellow",
    "bright_cyan",
    "bright_green",
    "bright_magenta",
    "bright_blue",
)
