"""The sink's HTTP/1.1 transport against small HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

import pytest

from shipper.sinks.elasticsearch.transport import (
    ConnectFailed,
    HttpTransport,
    RequestFailed,
)
from tests.harness.distribution import free_port


class Server:
    """Answers each request with `answer(head, body) -> raw bytes`; records connections."""

    def __init__(self, answer: Callable[[bytes, bytes], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                raw = self.answer(head, body)
                if raw is None:
                    await asyncio.sleep(3600)  # never answers
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_keep_alive_reuses_one_connection_and_reads_content_length():
    async def main() -> None:
        async with Server(lambda h, b: ok()) as server:
            transport = HttpTransport([server.url])
            for _ in range(3):
                response = await transport.request("GET", "/_cluster/health")
                assert response.status == 200 and response.body == b'{"ok":true}'
            assert server.connections == 1
            await transport.close()

    asyncio.run(main())


def test_chunked_and_gzip_answers_are_decoded():
    payload = gzip.compress(b'{"errors":false}')
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, payload[:5])
        + b"%x\r\n%s\r\n" % (len(payload) - 5, payload[5:])
        + b"0\r\n\r\n"
    )

    async def main() -> None:
        async with Server(lambda h, b: chunked) as server:
            transport = HttpTransport([server.url])
            first = await transport.request("POST", "/_bulk", b"x")
            second = await transport.request("POST", "/_bulk", b"y")
            assert first.body == second.body == b'{"errors":false}'
            assert server.connections == 1
            await transport.close()

    asyncio.run(main())


def test_gzip_bodies_and_fixed_headers_are_sent():
    async def main() -> None:
        async with Server(lambda h, b: ok()) as server:
            transport = HttpTransport(
                [server.url], gzip_bodies=True, headers={"Authorization": "ApiKey c2VjcmV0"}
            )
            await transport.request(
                "POST", "/logs/_bulk", b"line\n" * 100, {"filter_path": "a,b.*"}
            )
            head, body = server.requests[0]
            assert head.startswith(b"POST /logs/_bulk?filter_path=a,b.* HTTP/1.1\r\n")
            assert b"Content-Encoding: gzip" in head and b"Authorization: ApiKey c2VjcmV0" in head
            assert gzip.decompress(body) == b"line\n" * 100
            await transport.close()

    asyncio.run(main())


def test_a_body_in_pieces_arrives_whole_plain_and_gzipped():
    pieces = [b'{"create":{}}\n{"message":"%d"}\n' % i for i in range(20_000)]  # ~600 KB

    async def main() -> None:
        async with Server(lambda h, b: ok()) as server:
            for gzip_bodies in (False, True):
                transport = HttpTransport([server.url], gzip_bodies=gzip_bodies)
                await transport.request("POST", "/_bulk", pieces)
                head, body = server.requests[-1]
                whole = gzip.decompress(body) if gzip_bodies else body
                assert whole == b"".join(pieces)
                assert b"Content-Length: %d\r\n" % len(body) in head
                await transport.close()

    asyncio.run(main())


def test_a_host_that_refuses_is_skipped_with_backoff_and_tried_again_after_it():
    now = [0.0]

    async def main() -> None:
        async with Server(lambda h, b: ok()) as server:
            dead = f"http://127.0.0.1:{free_port()}"
            transport = HttpTransport([dead, server.url], initial_backoff=5.0, clock=lambda: now[0])
            response = await transport.request("GET", "/")
            assert response.host == server.url  # the refused host did not block the request
            assert transport.alive() == 1
            for _ in range(4):  # every request goes to the live host meanwhile
                assert (await transport.request("GET", "/")).host == server.url
            now[0] += 6.0  # backoff over: the dead host is tried again, fails, backs off 10s
            for _ in range(2):  # hosts are taken in turn: one of these starts with it
                assert (await transport.request("GET", "/")).host == server.url
            assert transport.hosts[0].failures == 2
            assert transport.hosts[0].dead_until == pytest.approx(16.0)
            await transport.close()

    asyncio.run(main())


def test_every_host_down_raises_connect_failed_which_was_never_sent():
    async def main() -> None:
        transport = HttpTransport([f"http://127.0.0.1:{free_port()}" for _ in range(2)])
        with pytest.raises(ConnectFailed) as caught:
            await transport.request("POST", "/_bulk", b"x")
        assert caught.value.sent is False and "refused" in str(caught.value)

    asyncio.run(main())


def test_no_answer_within_the_timeout_is_a_request_that_may_have_been_sent():
    async def main() -> None:
        async with Server(lambda h, b: None) as server:
            transport = HttpTransport([server.url], timeout=0.2)
            with pytest.raises(RequestFailed) as caught:
                await transport.request(
                    "POST", "/_bulk", b"x", headers={"Authorization": "Basic c2VjcmV0"}
                )
            assert caught.value.sent is True and "within 0.2s" in str(caught.value)
            assert "c2VjcmV0" not in str(caught.value)
            await transport.close()

    asyncio.run(main())


def test_a_connection_closed_mid_answer_is_a_request_that_may_have_been_sent():
    async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(half_then_close, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        transport = HttpTransport([url], timeout=5)
        with pytest.raises(RequestFailed) as caught:
            await transport.request("GET", "/")
        assert caught.value.sent and "before the answer was complete" in str(caught.value)
        server.close()

    asyncio.run(main())
