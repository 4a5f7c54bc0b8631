"""Bulk indexing into Elasticsearch: nothing lost, nothing duplicated, nothing silent.

Each batch is one task that ends only when every document in it is accounted for:
indexed (201), already there (409 on create: an earlier attempt made it), dead-lettered
with its reason, or given up after `retry.max_attempts` (off by default) with a counter
and a log line. Then, and only then, the batch is acknowledged and its files' offsets may
be committed.

Request failures (connection errors, timeouts, 429, 5xx, auth) retry the whole request
with exponential backoff and full jitter, without limit by default: the files are the
buffer. In a bulk response each item is judged alone: 429 and 5xx items are retried on
their own, mapping and parse rejections go to dead letters while the rest of the batch is
indexed. A 413 splits the request in halves until it fits; a single document that cannot
fit goes to dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import NdjsonSerializer, TlsError
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer

from shipper.config import ConfigError, Elasticsearch, secret
from shipper.document import DocumentEncoder
from shipper.observe import Metrics
from shipper.sinks.base import Batch
from shipper.sinks.templates import (
    TEMPLATE_VERSION,
    dead_letter_template,
    document_template,
    target_patterns,
    template_name,
)

log = logging.getLogger(__name__)

NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
JSON = "application/vnd.elasticsearch+json; compatible-with=8"
# Keep responses small: per item only what decides its fate.
FILTER = (
    "errors,items.*.status,items.*.error.type,items.*.error.reason,"
    "items.*.error.caused_by.reason,items.*.failure_store"
)
RETRYABLE_ITEM = frozenset({429, 500, 502, 503, 504, 408, 404, 403, 401})
DEAD_LETTER_MESSAGE_LIMIT = 32 * 1024


class SinkStartError(RuntimeError):
    """Elasticsearch can never be used as configured (TLS verification, credentials)."""


class _ResponseSerializer(OrjsonSerializer):
    """orjson, except that a bulk response where every item succeeded is not parsed at all:
    with 10,000 documents a request, decoding the per-item statuses would cost more than
    encoding the documents did. ("errors" comes first once filter_path has removed "took".)
    """

    def loads(self, data: bytes) -> Any:
        if data.startswith(b'{"errors":false') and b'"failure_store"' not in data:
            return {"errors": False}
        return super().loads(data)


class _NdjsonPassThrough(NdjsonSerializer):
    """Request bodies are NDJSON bytes already; send them as they are (no copy)."""

    def dumps(self, data: Any) -> bytes:
        return data if isinstance(data, bytes) else super().dumps(data)


class ElasticsearchSink:
    def __init__(
        self,
        cfg: Elasticsearch,
        ack: Callable[[Batch], None],
        metrics: Metrics,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self._ack = ack
        self.metrics = metrics
        self._sleep = sleep
        self._queue: deque[Batch] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._prepare_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._ready_once = False
        self._client: AsyncElasticsearch | None = None
        self._ready = False
        self._failure_store = False
        self._closing = False
        self.target = cfg.index or cfg.data_stream
        # Data stream: POST /<stream>/_bulk. Dated indices: POST /_bulk, _index per action.
        self._bulk_path = "/_bulk" if cfg.index else f"/{cfg.data_stream}/_bulk"
        self._last_error_log = 0.0

    # ---- the Sink protocol -----------------------------------------------------------

    def encoder(self, path: str, metadata: bytes, id_prefix: bytes) -> DocumentEncoder:
        return DocumentEncoder(
            path=path,
            metadata=metadata,
            actions=True,
            id_prefix=id_prefix if self.cfg.deterministic_ids else None,
            index_format=self.cfg.index or None,
        )

    async def start(self) -> None:
        """Connect and install templates in the background; batches wait for it."""
        self._client = self._make_client()
        self._prepare_task = asyncio.create_task(self._prepare())
        self._prepare_task.add_done_callback(self._prepared_or_failed)

    def _prepared_or_failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
        self._pump()

    async def send(self, batch: Batch) -> None:
        """Queue a batch. Never blocks: the pipeline's byte budget bounds the queue."""
        self._queue.append(batch)
        self._pump()

    def _pump(self) -> None:
        if self._closing:  # a request cancelled by `close` must not start the next one
            return
        while self._queue and len(self._tasks) < self.cfg.bulk.concurrency and self._ready_once:
            batch = self._queue.popleft()
            task = asyncio.create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pump()
        if not self._tasks and not self._queue:
            self._idle.set()

    async def drain(self, timeout: float | None = None) -> bool:
        if not self._tasks and not self._queue:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        if self._prepare_task is not None:
            self._prepare_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._client is not None:
            await self._client.close()

    def ready(self) -> bool:
        return self._ready

    def fatal(self) -> BaseException | None:
        """An error that retrying cannot fix (the daemon exits 1 with it)."""
        return self._fatal

    # ---- start-up ----------------------------------------------------------------------

    def _make_client(self) -> AsyncElasticsearch:
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "hosts": cfg.hosts,
            "request_timeout": cfg.bulk.timeout,
            "max_retries": 0,  # retries are ours: per item, with backoff, counted
            "retry_on_timeout": False,
            "http_compress": cfg.bulk.gzip,
            "connections_per_node": max(cfg.bulk.concurrency + 1, 2),
            "serializers": {
                "application/json": _ResponseSerializer(),
                "application/vnd.elasticsearch+json": _ResponseSerializer(),
                "application/x-ndjson": _NdjsonPassThrough(),
                "application/vnd.elasticsearch+x-ndjson": _NdjsonPassThrough(),
            },
            "verify_certs": cfg.tls.verify,
            "ssl_show_warn": False,
        }
        if cfg.tls.ca_file:
            kwargs["ca_certs"] = cfg.tls.ca_file
        if cfg.tls.cert_file:
            kwargs["client_cert"] = cfg.tls.cert_file
            kwargs["client_key"] = cfg.tls.key_file or None
        password = secret(cfg.password, cfg.password_file, "elasticsearch.password")
        api_key = secret(cfg.api_key, cfg.api_key_file, "elasticsearch.api_key")
        if api_key:
            kwargs["api_key"] = api_key
        elif cfg.username:
            kwargs["basic_auth"] = (cfg.username, password)
        elif password:
            raise ConfigError("elasticsearch.username: must be set when a password is given")
        return AsyncElasticsearch(**kwargs)

    async def _prepare(self) -> None:
        """Wait for Elasticsearch, then install the templates (retried until it works)."""
        attempt = 0
        while not self._closing:
            try:
                version = await self._server_version()
                self._failure_store = _supports_failure_store(version) and not self.cfg.index
                if self.cfg.install_template:
                    await self._install_templates()
                self._ready = self._ready_once = True
                log.info(
                    "elasticsearch ready",
                    extra={
                        "version": version,
                        "target": self.target,
                        "failure_store": self._failure_store,
                    },
                )
                return
            except TlsError as exc:
                raise SinkStartError(
                    f"TLS verification of {', '.join(self.cfg.hosts)} failed: {_tls_reason(exc)}"
                    " (check elasticsearch.tls.ca_file)"
                ) from None
            except ApiError as exc:
                if exc.meta.status in (401, 403):
                    raise SinkStartError(
                        f"Elasticsearch refused the credentials ({exc.meta.status} "
                        f"{_error_type(exc)}); check elasticsearch.username/password_file or "
                        "api_key_file"
                    ) from None
                if exc.meta.status == 400:
                    raise SinkStartError(
                        f"Elasticsearch refused shipper's index template for {self.target!r}: "
                        f"{_error_reason(exc)} (check elasticsearch.data_stream / index, or set "
                        "install_template: false and manage it yourself)"
                    ) from None
                self._log_retry("elasticsearch not ready yet", exc)
            except TransportConnectionError as exc:
                self._log_retry("elasticsearch not reachable yet", exc)
            await self._sleep(self._backoff(attempt))
            attempt += 1

    async def _server_version(self) -> str:
        try:
            info = await self._request("GET", "/")
            return str(info.get("version", {}).get("number", "?"))
        except ApiError as exc:
            if exc.meta.status not in (404, 405):
                raise
        # Distributions without the root endpoint (the test distribution) still say it here.
        nodes = await self._request(
            "GET", "/_nodes/_local", params={"filter_path": "nodes.*.version"}
        )
        return str(next(iter(nodes.get("nodes", {}).values()), {}).get("version", "?"))

    async def _install_templates(self) -> None:
        patterns = target_patterns(self.cfg.data_stream, self.cfg.index)
        wanted = {
            template_name(self.target): document_template(
                patterns,
                data_stream=not self.cfg.index,
                failure_store=self._failure_store,
                ilm_policy=self.cfg.ilm_policy,
            ),
            template_name(self.cfg.dead_letter_index): dead_letter_template(
                self.cfg.dead_letter_index
            ),
        }
        for name, body in wanted.items():
            try:
                found = await self._request("GET", f"/_index_template/{name}")
                installed = found["index_templates"][0]["index_template"].get("version", 0)
            except ApiError as exc:
                if exc.meta.status != 404:
                    raise
                installed = -1
            if installed >= TEMPLATE_VERSION:
                continue
            await self._request("PUT", f"/_index_template/{name}", body=body)
            log.info(
                "index template installed", extra={"template": name, "version": TEMPLATE_VERSION}
            )

    # ---- delivery ------------------------------------------------------------------------

    async def _deliver(self, batch: Batch) -> None:
        try:
            await self._bulk(batch.entries, 0)
        except asyncio.CancelledError:
            return  # shutting down: not acknowledged, so read and sent again next start
        except Exception:  # a bug must not silently stall the pipeline's acknowledgements
            log.exception("unexpected error delivering a batch; it will be sent again")
            self._queue.append(batch)
            await self._sleep(1.0)
            return
        self._ack(batch)

    async def _bulk(self, items: list[bytes], tried: int) -> None:
        """Send NDJSON entries until each one is accounted for (`tried`: attempts so far)."""
        attempt = 0
        pending = items
        while pending:
            body = b"".join(pending)
            tried += 1
            log.debug(
                "bulk request",
                extra={"documents": len(pending), "bytes": len(body), "attempt": attempt + 1},
            )
            try:
                response = await self._request(
                    "POST",
                    self._bulk_path,
                    body=body,
                    params={"filter_path": FILTER},
                    content_type=NDJSON,
                )
            except ApiError as exc:
                status = exc.meta.status
                if status == 413:
                    self.metrics.bulk_requests.inc(1, "split")
                    await self._split(pending, tried)
                    return
                if status == 400 and len(pending) > 1:
                    self.metrics.bulk_requests.inc(1, "split")
                    await self._split(pending, tried)
                    return
                if status == 400:
                    await self._dead_letter(pending[0], status, _error_type(exc), str(exc))
                    return
                self.metrics.bulk_requests.inc(1, "error")
                self.metrics.retries.inc(len(pending), f"http_{status}")
                self._log_retry("bulk request failed; retrying", exc, documents=len(pending))
                pending = self._still_trying(pending, f"http_{status}", tried)
            except TransportConnectionError as exc:
                self.metrics.bulk_requests.inc(1, "unreachable")
                self.metrics.retries.inc(len(pending), "connection")
                self._ready = False
                self._log_retry("elasticsearch unreachable; retrying", exc, documents=len(pending))
                pending = self._still_trying(pending, "connection", tried)
            else:
                self._ready = True
                self.metrics.bytes_sent.inc(len(body))
                pending = await self._judge(pending, response, tried)
                if not pending:
                    return
            await self._sleep(self._backoff(attempt))
            attempt += 1

    async def _split(self, items: list[bytes], tried: int) -> None:
        if len(items) == 1:
            await self._dead_letter(
                items[0],
                413,
                "request_too_large",
                "the document alone is larger than the cluster's http.max_content_length",
            )
            return
        half = len(items) // 2
        await self._bulk(items[:half], tried)
        await self._bulk(items[half:], tried)

    async def _judge(self, items: list[bytes], response: dict[str, Any], tried: int) -> list[bytes]:
        """Account for each item of a bulk response; return the ones to try again."""
        results = response.get("items")
        if not response.get("errors") and results is None:  # every item created
            self.metrics.documents_indexed.inc(len(items))
            self.metrics.bulk_requests.inc(1, "ok")
            return []
        if results is None or len(results) != len(items):
            log.error(
                "bulk response does not match the request; sending it again",
                extra={"documents": len(items)},
            )
            return self._still_trying(items, "bad_response", tried)
        metrics = self.metrics
        retry: list[bytes] = []
        indexed = duplicates = 0
        outcome = "ok"
        for item, result in zip(items, results, strict=True):
            info = next(iter(result.values()))
            status = info.get("status", 0)
            if status in (200, 201):
                indexed += 1
                if info.get("failure_store") == "used":
                    metrics.dead_letters.inc()
                    outcome = "partial"
            elif status == 409:
                duplicates += 1
            elif status in RETRYABLE_ITEM or status >= 500:
                retry.append(item)
                outcome = "partial"
            else:
                error = info.get("error") or {}
                reason = error.get("reason") or ""
                cause = (error.get("caused_by") or {}).get("reason")
                if cause:
                    reason = f"{reason}: {cause}"
                await self._dead_letter(item, status, error.get("type", "unknown"), reason)
                outcome = "partial"
        metrics.documents_indexed.inc(indexed)
        metrics.documents_duplicate.inc(duplicates)
        metrics.bulk_requests.inc(1, outcome)
        if retry:
            statuses = {next(iter(r.values())).get("status") for r in results}
            metrics.retries.inc(
                len(retry),
                "item_"
                + "_".join(str(s) for s in sorted(statuses) if s in RETRYABLE_ITEM or s >= 500),
            )
            self._log_retry(
                "some documents were refused for now; retrying them", None, documents=len(retry)
            )
        return self._still_trying(retry, "item", tried)

    def _still_trying(self, items: list[bytes], reason: str, tried: int) -> list[bytes]:
        limit = self.cfg.retry.max_attempts
        if not limit or tried < limit or not items:
            return items
        self.metrics.lines_given_up.inc(len(items), "retries_exhausted")
        log.error(
            "giving documents up after retry.max_attempts attempts",
            extra={"documents": len(items), "attempts": limit, "last_reason": reason},
        )
        return []

    async def _dead_letter(self, entry: bytes, status: int, kind: str, reason: str) -> None:
        """Store a rejected document as plain strings with the reason, in its own index."""
        action_line, _, doc_line = entry.partition(b"\n")
        action = next(iter(orjson.loads(action_line).values()))
        doc_text = doc_line.rstrip(b"\n").decode("utf-8", "replace")
        try:
            doc = orjson.loads(doc_line)
        except orjson.JSONDecodeError:
            doc = {}
        kube = doc.get("kubernetes") or {}
        letter = {
            "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "error": {"type": kind, "reason": reason[:4096]},
            "status": status,
            "intended_target": action.get("_index", self.target),
            "document_id": action.get("_id", ""),
            "message": str(doc.get("message", ""))[:DEAD_LETTER_MESSAGE_LIMIT],
            "document": doc_text[:DEAD_LETTER_MESSAGE_LIMIT],
            "log": {"file": {"path": str((doc.get("log") or {}).get("file", {}).get("path", ""))}},
            "kubernetes": {
                "namespace": str(kube.get("namespace", "")),
                "pod": {"name": str((kube.get("pod") or {}).get("name", ""))},
                "container": {"name": str((kube.get("container") or {}).get("name", ""))},
            },
        }
        dl_action: dict[str, Any] = {"_index": self.cfg.dead_letter_index}
        if action.get("_id"):
            dl_action["_id"] = action["_id"]
        letter_entry = orjson.dumps({"create": dl_action}) + b"\n" + orjson.dumps(letter) + b"\n"
        log.warning(
            "document rejected; written to dead letters",
            extra={
                "status": status,
                "error_type": kind,
                "reason": reason[:500],
                "file": letter["log"]["file"]["path"],
                "dead_letter_index": self.cfg.dead_letter_index,
            },
        )
        attempt = 0
        while True:
            try:
                response = await self._request(
                    "POST",
                    "/_bulk",
                    body=letter_entry,
                    params={"filter_path": FILTER},
                    content_type=NDJSON,
                )
                results = response.get("items") or [{"create": {"status": 201}}]
                info = next(iter(results[0].values()))
                if info.get("status") in (200, 201, 409):
                    self.metrics.dead_letters.inc()
                    return
                if info.get("status") not in RETRYABLE_ITEM:
                    self.metrics.lines_given_up.inc(1, "dead_letter_rejected")
                    log.error(
                        "the dead-letter index refused a document; given up",
                        extra={"status": info.get("status"), "error": info.get("error")},
                    )
                    return
            except (ApiError, TransportConnectionError) as exc:
                self._log_retry("writing a dead letter failed; retrying", exc)
            await self._sleep(self._backoff(attempt))
            attempt += 1

    # ---- plumbing ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = JSON,
    ) -> Any:
        assert self._client is not None
        headers = {"accept": JSON}
        if body is not None:
            headers["content-type"] = content_type
        response = await self._client.perform_request(
            method, path, params=params, headers=headers, body=body
        )
        return response.body

    def _backoff(self, attempt: int) -> float:
        r = self.cfg.retry
        ceiling = min(r.max_backoff, r.initial_backoff * (2 ** min(attempt, 30)))
        return random.uniform(r.initial_backoff / 2, ceiling)  # full jitter, with a floor

    def _log_retry(self, message: str, exc: BaseException | None, **fields: Any) -> None:
        # At most one line every 10 s while failing: loud enough, never a flood.
        now = time.monotonic()
        if now - self._last_error_log < 10:
            return
        self._last_error_log = now
        if exc is not None:
            fields["error"] = _describe(exc)
        log.warning(message, extra=fields)


def _supports_failure_store(version: str) -> bool:
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (9, 1)


def _error_type(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("type", exc.meta.status))
    return str(exc.meta.status)


def _error_reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {str(error.get('reason', ''))[:500]}"
    return str(exc.meta.status)


def _tls_reason(exc: BaseException) -> str:
    """The useful part of a TLS failure, e.g. "certificate verify failed: unable to get
    local issuer certificate", found among the wrapped causes."""
    texts = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        texts.append(str(e))
        todo += [x for x in getattr(e, "errors", ()) if isinstance(x, BaseException)]
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
    for text in texts:
        for marker in (
            "certificate verify failed",
            "hostname mismatch",
            "doesn't match",
            "wrong version number",
            "self-signed",
            "self signed",
        ):
            at = text.find(marker)
            if at >= 0:
                end = text.find(")", at)
                found = text[at : end if end > 0 else None]
                return re.sub(r"\s*\(_ssl\.c:\d+$", "", found).strip(" ()[]'\"")
    return texts[-1][:300] if texts else "unknown TLS error"


def _describe(exc: BaseException) -> str:
    """A short, secret-free description (no headers, no bodies)."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.meta.status} {_error_type(exc)}"
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"
