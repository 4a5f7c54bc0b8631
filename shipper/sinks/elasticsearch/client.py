"""The calls shipper makes to Elasticsearch or OpenSearch, over an injected transport.

`Transport` is the one seam to the network: the sink, start-up, the dead letters and the
uncertain-range lookup all go through `Client`, so unit tests hand it a fake transport and
need no server. Request bodies are bytes (NDJSON for `_bulk`, passed on without a copy);
JSON answers are parsed with orjson.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

import orjson

from shipper.config import ConfigError, Elasticsearch, secret
from shipper.sinks.elasticsearch.transport import HttpTransport, Response, tls_context
from shipper.sinks.elasticsearch.wire import Body

JSON = "application/json"
NDJSON = "application/x-ndjson"


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        body: Body | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response: ...

    def alive(self) -> int: ...

    async def close(self) -> None: ...


class ApiError(Exception):
    """The server answered with an error status (the body's type and reason, no secrets)."""

    def __init__(self, status: int, body: bytes, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.type, self.reason = error_of(body, status)
        super().__init__(f"HTTP {status} {self.type}: {self.reason[:300]}".rstrip(": "))
        self.where = f"{method} {path}".strip()


def error_of(body: bytes, status: int) -> tuple[str, str]:
    """(type, reason) of an Elasticsearch error body; the status when it has none."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return str(status), body[:200].decode("utf-8", "replace")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        root = (error.get("root_cause") or [error])[0]
        return str(root.get("type", status)), str(root.get("reason", ""))
    if isinstance(error, str):
        return str(status), error
    return str(status), ""


class Client:
    """JSON calls and raw `_bulk` over a transport; 4xx and 5xx raise ApiError."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def json(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The parsed answer; None for a 404 when `missing_ok`."""
        payload = None if body is None else orjson.dumps(body)
        headers = {"Accept": JSON}
        if payload is not None:
            headers["Content-Type"] = JSON
        response = await self.transport.request(method, path, payload, params, headers)
        if response.status == 404 and missing_ok:
            return None
        if response.status >= 400:
            raise ApiError(response.status, response.body, method, path)
        return orjson.loads(response.body) if response.body else {}

    async def bulk(
        self, path: str, body: Body, params: dict[str, str], size: int | None = None
    ) -> Response:
        """POST NDJSON (`size`: its bytes, if known); the raw response (the classifier
        decides what it means)."""
        return await self.transport.request(
            "POST", path, body, params, {"Accept": JSON, "Content-Type": NDJSON}, size=size
        )

    def hosts_alive(self) -> int:
        return self.transport.alive()

    async def close(self) -> None:
        await self.transport.close()


def make_transport(cfg: Elasticsearch) -> HttpTransport:
    """The real transport for the configured hosts, TLS and credentials."""
    password = secret(cfg.password, cfg.password_file, "elasticsearch.password")
    api_key = secret(cfg.api_key, cfg.api_key_file, "elasticsearch.api_key")
    headers = {}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif cfg.username:
        token = base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif password:
        raise ConfigError("elasticsearch.username: must be set when a password is given")
    tls = None
    if any(h.startswith("https:") for h in cfg.hosts):
        t = cfg.tls
        try:
            tls = tls_context(t.verify, t.ca_file, t.cert_file, t.key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"elasticsearch.tls: cannot load certificates: {exc}") from None
    return HttpTransport(
        cfg.hosts,
        timeout=cfg.bulk.timeout,
        tls=tls,
        headers=headers,
        gzip_bodies=cfg.bulk.gzip,
        pool_size=max(cfg.bulk.concurrency + 1, 2),
        initial_backoff=max(cfg.retry.initial_backoff, 0.5),
        max_backoff=cfg.retry.max_backoff,
    )
