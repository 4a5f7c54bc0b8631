"""An HTTP/1.1 proxy that can sit on an answer: a bulk request executed by the server whose
answer never reaches shipper, as when a request times out after Elasticsearch did the work.

`hold_next_bulk()`: the next `_bulk` request is forwarded and answered upstream, but the
answer is kept back; from then on every request waits at the proxy until `release()`, so
the test can change the cluster (a rollover) between the first attempt and its retry.
Runs its own event loop in a thread; requests are relayed one at a time per connection
(Content-Length bodies, which is what shipper and Elasticsearch send).
"""

from __future__ import annotations

import asyncio
import threading

from tests.harness.distribution import free_port


class HoldProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("//", 1)[1].partition(":")
        self.upstream = (host, int(port.rstrip("/")))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.held_bulks = 0  # bulk answers kept back
        self.bulks = 0
        self._hold = False
        self._gate = threading.Event()
        self._gate.set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def hold_next_bulk(self) -> None:
        self._hold = True

    def release(self) -> None:
        self._gate.set()

    def stop(self) -> None:
        self._gate.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            while True:
                head, body = await _read_message(client_r)
                while not self._gate.is_set():
                    await asyncio.sleep(0.02)
                up_w.write(head + body)
                await up_w.drain()
                answer_head, answer_body = await _read_message(up_r)
                if b"/_bulk" in head.split(b"\r\n", 1)[0]:
                    self.bulks += 1
                    if self._hold:
                        self._hold = False
                        self._gate.clear()  # everything after waits for release()
                        self.held_bulks += 1
                        while not self._gate.is_set():
                            await asyncio.sleep(0.02)
                        return  # the answer is never delivered
                client_w.write(answer_head + answer_body)
                await client_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            client_w.close()
            up_w.close()


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return head, await _read_chunks(reader)
    return head, await reader.readexactly(length) if length else b""


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        out += line
        size = int(line.split(b";")[0], 16)
        out += await reader.readexactly(size + 2)
        if size == 0:
            return out
