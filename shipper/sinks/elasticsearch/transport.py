"""HTTP/1.1 on asyncio for the sink: a keep-alive pool per host, several hosts, TLS.

Small on purpose: shipper needs `_bulk` and a handful of JSON calls, and the
elasticsearch-py stack (aiohttp and its dependencies) cost 37 MiB of memory to import
and refuses to talk to OpenSearch. What it does:

- one pool of idle keep-alive connections per host, opened on demand;
- hosts taken in turn; a host whose connection failed is skipped for a backoff that
  doubles with each failure in a row (`initial_backoff` .. `max_backoff`) and is tried
  again after it; when every host is marked dead the one due soonest is tried anyway;
- a connection that could not even be opened is tried on the next host at once (the
  request was certainly not sent); a failure after the request was written is raised as
  `RequestFailed` with `sent=True`, because the server may have acted on it;
- TLS verified by default (system CAs or a CA file), client certificates, basic auth or
  an API key as a fixed header (never logged, never put in an error message);
- gzip request bodies; responses with Content-Length, chunked or read to the close, gzip
  decoded (wire.py: the messages themselves); one timeout for the whole exchange.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shipper.sinks.elasticsearch.wire import Body, gzipped, length, query, read_response, write_body

IDLE_SECONDS = 20.0  # an idle connection older than this is closed rather than reused
MAX_HEADER_BYTES = 64 * 1024
EXPECT_BYTES = 64 * 1024  # a body this large that breaks the pipe is asked for again


class TransportError(Exception):
    """The exchange with a host failed; `sent` says whether the request may have arrived."""

    sent = False

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class ConnectFailed(TransportError):
    """No connection could be opened to any host: the request was not sent."""


class RequestFailed(TransportError):
    """The connection failed or timed out after the request was written: it may have
    been executed (a retry of it is uncertain)."""

    sent = True


class TlsFailed(TransportError):
    """The TLS handshake failed (verification, protocol): retrying will not help."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    host: str


@dataclass(slots=True)
class _Host:
    url: str
    scheme: str
    hostname: str
    port: int
    base: str  # path prefix of the URL, without the trailing slash
    authority: bytes
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(
        default_factory=deque
    )
    failures: int = 0
    dead_until: float = 0.0


def parse_host(url: str) -> _Host:
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    hostname = parts.hostname or "localhost"
    shown = f"[{hostname}]" if ":" in hostname else hostname
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    authority = shown if default else f"{shown}:{port}"
    return _Host(url, scheme, hostname, port, parts.path.rstrip("/"), authority.encode())


def tls_context(
    verify: bool = True, ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> ssl.SSLContext:
    """Verified against the system CAs, or `ca_file`; optional client certificate."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


class HttpTransport:
    def __init__(
        self,
        hosts: list[str],
        timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        gzip_bodies: bool = False,
        pool_size: int = 4,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not hosts:
            raise ValueError("at least one host")
        self.hosts = [parse_host(h) for h in hosts]
        self.timeout = timeout
        self._tls = tls
        self._fixed = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
        self._gzip = gzip_bodies
        self._pool_size = pool_size
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._next = 0
        self._closed = False

    # ---- hosts -------------------------------------------------------------------------

    def alive(self) -> int:
        """Hosts not currently marked dead."""
        now = self._clock()
        return sum(1 for h in self.hosts if h.dead_until <= now)

    def _order(self) -> list[_Host]:
        """Hosts to try for one request: the live ones in turn, then the dead ones by the
        end of their backoff (so a request never waits for a dead host to be due)."""
        now = self._clock()
        n = len(self.hosts)
        start = self._next
        self._next = (self._next + 1) % n
        turn = [self.hosts[(start + i) % n] for i in range(n)]
        live = [h for h in turn if h.dead_until <= now]
        dead = sorted((h for h in turn if h.dead_until > now), key=lambda h: h.dead_until)
        return live + dead

    def _failed(self, host: _Host) -> None:
        host.failures += 1
        backoff = self._initial_backoff * (2 ** min(host.failures - 1, 20))
        host.dead_until = self._clock() + min(backoff, self._max_backoff)
        self._drop_idle(host)

    @staticmethod
    def _succeeded(host: _Host) -> None:
        host.failures = 0
        host.dead_until = 0.0

    # ---- requests ----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Body | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        size: int | None = None,
    ) -> Response:
        """One exchange with the first host that accepts a connection (`size`: the bytes
        of `body` when the caller knows them, so a body of many pieces is not measured)."""
        if self._closed:
            raise ConnectFailed("transport", "closed")
        extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
        payload = body
        if body is not None and self._gzip:
            payload, size = gzipped(body), None
            extra += b"Content-Encoding: gzip\r\n"
        if payload is None:
            size = 0
        elif size is None:
            size = length(payload)
        target = path if not params else path + "?" + query(params)
        limit = timeout if timeout is not None else self.timeout
        last: TransportError | None = None
        for host in self._order():
            began = self._clock()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for runs the awaited in a task
                # of its own, and each hop between tasks waits for a turn of the loop, which
                # on a backlog is a pass of reading (a request took 19 ms for a 3 ms
                # exchange, and a worker with one request at a time waited for it).
                try:
                    async with asyncio.timeout(limit):
                        conn = await self._connection(host)
                except TimeoutError:
                    raise ConnectFailed(host.url, f"no connection within {limit:g}s") from None
            except ConnectFailed as exc:
                self._failed(host)
                last = exc
                continue
            try:
                async with asyncio.timeout(max(limit - (self._clock() - began), 0.001)):
                    response = await self._exchange(
                        host, conn, method, target, payload, size, extra
                    )
            except TimeoutError:
                self._failed(host)
                raise RequestFailed(host.url, f"no answer within {limit:g}s") from None
            except RequestFailed:
                self._failed(host)
                raise
            self._succeeded(host)
            return response
        assert last is not None
        raise last

    async def _exchange(
        self,
        host: _Host,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, bool],
        method: str,
        target: str,
        body: Body | None,
        size: int,
        extra: bytes,
    ) -> Response:
        reader, writer, reused = conn
        head = self._head(host, method, target, size, extra)
        try:
            try:
                writer.write(head)
                if body:
                    await write_body(writer, body)
                await writer.drain()
            except (OSError, ssl.SSLError):
                writer.close()
                if body is None or size < EXPECT_BYTES:
                    raise
                # A server refusing a body (413 past http.max_content_length) answers and
                # closes before reading it; that answer is usually lost with the broken
                # pipe. Ask again, this time waiting for its verdict before the body.
                return await self._expect_continue(host, method, target, body, size, extra)
            status, headers, data, keep = await read_response(reader, method)
        except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as exc:
            writer.close()
            raise RequestFailed(host.url, _reason(exc, reused)) from None
        except BaseException:
            writer.close()  # cancelled or timed out mid-exchange: the stream is unusable
            raise
        if keep and len(host.idle) < self._pool_size:
            host.idle.append((reader, writer, self._clock()))
        else:
            writer.close()
        return Response(status, headers, data, host.url)

    def _head(self, host: _Host, method: str, target: str, size: int, extra: bytes) -> bytes:
        return b"%s %s%s HTTP/1.1\r\nHost: %s\r\n%s%sContent-Length: %d\r\n\r\n" % (
            method.encode(),
            host.base.encode(),
            target.encode(),
            host.authority,
            self._fixed,
            extra,
            size,
        )

    async def _expect_continue(
        self, host: _Host, method: str, target: str, body: Body, size: int, extra: bytes
    ) -> Response:
        """The request again on a new connection with `Expect: 100-continue`: the body goes
        only after the server's "100 Continue" (or after a second without an answer)."""
        reader, writer, _ = await self._connection(host, fresh=True)
        try:
            writer.write(
                self._head(host, method, target, size, extra + b"Expect: 100-continue\r\n")
            )
            await writer.drain()
            try:
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
            except TimeoutError:
                interim = b""  # no interim answer: send the body anyway (RFC 9110)
            if interim and not interim.startswith((b"HTTP/1.1 100", b"HTTP/1.0 100")):
                status, headers, data, _ = await read_response(reader, method, interim)
                return Response(status, headers, data, host.url)
            await write_body(writer, body)
            await writer.drain()
            status, headers, data, _ = await read_response(reader, method)
            return Response(status, headers, data, host.url)
        finally:
            writer.close()

    async def _connection(
        self, host: _Host, fresh: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = self._clock()
        while host.idle and not fresh:
            reader, writer, since = host.idle.pop()
            if now - since < IDLE_SECONDS and not reader.at_eof() and not writer.is_closing():
                return reader, writer, True
            writer.close()
        tls = None
        if host.scheme == "https":
            tls = self._tls or tls_context()
        try:
            reader, writer = await asyncio.open_connection(
                host.hostname,
                host.port,
                ssl=tls,
                server_hostname=host.hostname if tls else None,
                limit=MAX_HEADER_BYTES,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TlsFailed(host.url, f"certificate verify failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise TlsFailed(host.url, exc.reason or str(exc)) from None
        except OSError as exc:
            raise ConnectFailed(host.url, _reason(exc, False)) from None
        return reader, writer, False

    def _drop_idle(self, host: _Host) -> None:
        while host.idle:
            host.idle.pop()[1].close()

    async def close(self) -> None:
        self._closed = True
        for host in self.hosts:
            self._drop_idle(host)


def _reason(exc: BaseException, reused: bool) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        text = "connection closed before the answer was complete"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    else:
        text = f"{exc.__class__.__name__}: {str(exc)[:200]}".rstrip(": ")
    return text + (" (on a reused connection)" if reused else "")
