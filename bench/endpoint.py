"""A stand-in for Elasticsearch's HTTP API, for measuring shipper rather than the cluster.

Two modes, one process (run it apart from shipper so its CPU is not counted):

- instant: answers `_bulk` at once, item by item as Elasticsearch does (`201` for every
  `create`, each item in full unless the request's `filter_path` keeps less, as
  Elasticsearch's answer would be: a client that asks for less reads less), plus the few
  calls shipper makes at start (version, index templates).
- forward: passes every request to a real Elasticsearch and, for `_bulk`, records for each
  document the delay from its `@timestamp` (the moment the line was written) to the moment
  Elasticsearch's answer came back, which is when shipper sees the acknowledgement.

`GET /_bench/stats` returns {"documents", "requests", "bytes", "delays": [seconds...],
"sample": the first document of the last `_bulk` request, "first_at" and "last_at": when
the first and the last `_bulk` request were answered, Unix seconds (null before one)} and
`POST /_bench/reset` clears them.

    python -m bench.endpoint --port 9299 [--forward http://127.0.0.1:9200]
"""

from __future__ import annotations

import argparse
import fnmatch
import time
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

VERSION = {"name": "bench", "version": {"number": "9.5.3"}, "tagline": "You Know, for Search"}
_DROP = object()


def filter_path(value: Any, paths: list[list[str]]) -> Any:
    """`value` with only what Elasticsearch's `filter_path` patterns (split at dots) keep:
    `*` matches one key, arrays are looked through; `_DROP` when nothing is left."""
    if any(not p for p in paths):
        return value
    if isinstance(value, list):
        kept = [v for v in (filter_path(x, paths) for x in value) if v is not _DROP]
        return kept or _DROP
    if not isinstance(value, dict):
        return _DROP
    out = {}
    for key, item in value.items():
        rest = [p[1:] for p in paths if fnmatch.fnmatchcase(key, p[0])]
        if rest and (kept := filter_path(item, rest)) is not _DROP:
            out[key] = kept
    return out or _DROP


def bulk_answer(index: str, pattern: str | None) -> tuple[bytes, bytes, bytes]:
    """(head, item, tail) of an all-created `_bulk` answer, items as Elasticsearch 8/9 write
    them (`errors` first), through `filter_path` when the request had one."""
    item = {
        "create": {
            "_index": index,
            "_id": "bench-document-id-01",
            "_version": 1,
            "result": "created",
            "_shards": {"total": 2, "successful": 1, "failed": 0},
            "_seq_no": 1000,
            "_primary_term": 1,
            "status": 201,
        }
    }
    answer: Any = {"errors": False, "took": 3, "items": [item]}
    if pattern:
        answer = filter_path(answer, [p.split(".") for p in pattern.split(",") if p])
        if answer is _DROP:
            return b"{}", b"", b""
    items = answer.pop("items", None)
    top = orjson.dumps(answer)
    if items is None:
        return top, b"", b""
    head = top[:-1] + (b',"items":[' if answer else b'"items":[')
    return head, orjson.dumps(items[0]), b"]}"


class Endpoint:
    def __init__(self, forward: str | None) -> None:
        self.forward = forward.rstrip("/") if forward else None
        self.session: aiohttp.ClientSession | None = None
        self.answers: dict[tuple[str, str | None], tuple[bytes, bytes, bytes]] = {}
        self.reset()

    def reset(self) -> None:
        self.documents = 0
        self.requests = 0
        self.bytes = 0
        self.delays: list[float] = []
        self.sample: Any = None
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_bench/stats":
            body = {
                "documents": self.documents,
                "requests": self.requests,
                "bytes": self.bytes,
                "delays": self.delays,
                "sample": self.sample,
                "first_at": self.first_at,
                "last_at": self.last_at,
            }
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        if path == "/_bench/reset":
            self.reset()
            return web.Response(body=b"{}", content_type="application/json")
        raw = await request.read()
        if self.forward is not None:
            return await self._forward(request, raw)
        if path.endswith("/_bulk"):
            body = raw  # aiohttp has already undone Content-Encoding
            self.requests += 1
            self.bytes += len(raw)
            items = body.count(b"\n") // 2
            self.documents += items
            self.sample = _first_document(body)
            self.last_at = time.time()
            self.first_at = self.first_at or self.last_at
            index = path[1:].rpartition("/")[0] or "fluent-bit"
            key = (index, request.query.get("filter_path"))
            if key not in self.answers:
                self.answers[key] = bulk_answer(*key)
            head, item, tail = self.answers[key]
            return _json(head + b",".join([item] * items) + tail if item else head)
        if path.startswith("/_index_template/"):
            if request.method == "GET":
                return _json(b'{"error":"not found","status":404}', 404)
            return _json(b'{"acknowledged":true}')
        if path == "/":
            return _json(orjson.dumps(VERSION))
        return _json(b'{"acknowledged":true}')

    async def _forward(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        if self.session is None:
            self.session = aiohttp.ClientSession(auto_decompress=False)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "content-encoding")
        }
        async with self.session.request(
            request.method,
            self.forward + request.path_qs,
            data=raw if raw else None,
            headers=headers,
        ) as answer:
            payload = await answer.read()
            acknowledged = time.time()
            status = answer.status
            out_headers = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "content-encoding", "x-elastic-product")
            }
        if request.path.endswith("/_bulk") and status == 200:
            body = raw  # aiohttp has already undone Content-Encoding
            self.requests += 1
            self.bytes += len(raw)
            lines = body.split(b"\n")
            for doc in lines[1::2]:
                if not doc:
                    continue
                self.documents += 1
                stamp = orjson.loads(doc).get("@timestamp")
                if stamp:
                    self.delays.append(acknowledged - _epoch(stamp))
        return web.Response(body=payload, status=status, headers=out_headers)


def _first_document(body: bytes) -> Any:
    lines = body.split(b"\n", 2)
    try:
        return orjson.loads(lines[1]) if len(lines) > 1 else None
    except orjson.JSONDecodeError:
        return None


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time with up to nine fractional digits."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + (float("0." + frac) if frac else 0.0)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        headers={"X-elastic-product": "Elasticsearch"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9299)
    parser.add_argument("--forward", default=None, help="a real Elasticsearch to pass on to")
    args = parser.parse_args()
    endpoint = Endpoint(args.forward)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", endpoint.handle)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
