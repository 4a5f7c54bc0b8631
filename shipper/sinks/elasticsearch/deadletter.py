"""Documents the target rejected, kept in a dead-letter index with the reason.

A dead letter holds the original document as plain text (never parsed again by a mapping,
so it cannot be rejected for the same reason), the intended target, the error and a few
fields to find it by. The letters of one bulk answer are written in one request (split
only where they would exceed `bulk.max_bytes`). If the dead-letter write is refused as a
request (400) or per item for a reason that will not heal, those letters are counted in
`shipper_lines_given_up_total{reason="dead_letter_rejected"}`, logged once, and given up:
retrying them forever would stall the file's checkpoint behind them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shipper.observe import Metrics
from shipper.sinks.elasticsearch.classify import FILTER_PATH, classify, retryable_status
from shipper.sinks.elasticsearch.client import Client, error_of
from shipper.sinks.elasticsearch.transport import TransportError

log = logging.getLogger(__name__)

TEXT_LIMIT = 32 * 1024


@dataclass(slots=True)
class Letter:
    entry: bytes  # the rejected NDJSON entry: action line and document
    status: int
    type: str
    reason: str


def letter_entry(letter: Letter, index: str, target: str, now: float | None = None) -> bytes:
    """The `_bulk` entry storing one rejected entry in `index`."""
    action_line, _, doc_line = letter.entry.partition(b"\n")
    try:
        action = next(iter(orjson.loads(action_line).values()))
    except (orjson.JSONDecodeError, StopIteration, AttributeError):
        action = {}
    doc_text = doc_line.rstrip(b"\n").decode("utf-8", "replace")
    try:
        doc = orjson.loads(doc_line)
    except orjson.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    kube = doc.get("kubernetes") or {}
    stamp = time.gmtime(time.time() if now is None else now)
    body = {
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        "error": {"type": letter.type, "reason": letter.reason[:4096]},
        "status": letter.status,
        "intended_target": action.get("_index", target),
        "document_id": action.get("_id", ""),
        "message": str(doc.get("message", ""))[:TEXT_LIMIT],
        "document": doc_text[:TEXT_LIMIT],
        "log": {"file": {"path": str((doc.get("log") or {}).get("file", {}).get("path", ""))}},
        "kubernetes": {
            "namespace": str(kube.get("namespace", "")),
            "pod": {"name": str((kube.get("pod") or {}).get("name", ""))},
            "container": {"name": str((kube.get("container") or {}).get("name", ""))},
        },
    }
    dl_action: dict[str, Any] = {"_index": index}
    if action.get("_id"):
        dl_action["_id"] = action["_id"]  # a re-sent rejection is answered 409, not doubled
    return orjson.dumps({"create": dl_action}) + b"\n" + orjson.dumps(body) + b"\n"


class DeadLetters:
    """Writes letters to the dead-letter index until each is stored or given up."""

    def __init__(
        self,
        client: Client,
        index: str,
        target: str,
        metrics: Metrics,
        max_bytes: int,
        pause: Callable[[int], Awaitable[None]],
        log_retry: Callable[..., None],
    ) -> None:
        self.client = client
        self.index = index
        self.target = target
        self.metrics = metrics
        self.max_bytes = max_bytes
        self._pause = pause  # backoff before attempt n
        self._log_retry = log_retry

    async def write(self, letters: list[Letter]) -> None:
        if not letters:
            return
        first = letters[0]
        log.warning(
            "documents rejected; written to dead letters",
            extra={
                "documents": len(letters),
                "status": first.status,
                "error_type": first.type,
                "reason": first.reason[:500],
                "dead_letter_index": self.index,
            },
        )
        entries = [letter_entry(letter, self.index, self.target) for letter in letters]
        for chunk in _chunks(entries, self.max_bytes):
            await self._write(chunk)

    async def _write(self, pending: list[bytes]) -> None:
        attempt = 0
        while pending:
            try:
                response = await self.client.bulk(
                    "/_bulk", b"".join(pending), {"filter_path": FILTER_PATH}
                )
            except TransportError as exc:
                self._log_retry("writing dead letters failed; retrying", exc)
            else:
                if response.status == 200:
                    pending = self._judge(pending, response.body)
                elif retryable_status(response.status):
                    self._log_retry(
                        "writing dead letters failed; retrying",
                        None,
                        status=response.status,
                        error_type=error_of(response.body, response.status)[0],
                    )
                else:
                    kind, reason = error_of(response.body, response.status)
                    self._give_up(len(pending), response.status, kind, reason)
                    return
            if pending:
                await self._pause(attempt)
                attempt += 1

    def _judge(self, pending: list[bytes], body: bytes) -> list[bytes]:
        verdict = classify(body, len(pending))
        # A 409: stored by an earlier attempt, which counted it then.
        self.metrics.dead_letters.inc(verdict.indexed + verdict.failure_store)
        if verdict.rejected:
            first = verdict.rejected[0]
            self._give_up(len(verdict.rejected), first.status, first.type, first.reason)
        return [pending[i] for i in verdict.retry]

    def _give_up(self, count: int, status: int, kind: str, reason: str) -> None:
        self.metrics.lines_given_up.inc(count, "dead_letter_rejected")
        log.error(
            "the dead-letter index refused documents; given up",
            extra={
                "documents": count,
                "status": status,
                "error_type": kind,
                "reason": reason[:500],
                "dead_letter_index": self.index,
            },
        )


def _chunks(entries: list[bytes], max_bytes: int) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    size = 0
    for entry in entries:
        if out[-1] and size + len(entry) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += len(entry)
    return out
