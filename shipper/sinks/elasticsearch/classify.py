"""What a `_bulk` answer means for each document: pure functions, no I/O.

Per item: indexed (201), duplicate (409 on create: an earlier attempt made it), retry
(429, 5xx, a cluster block, an auth or missing-index answer that can heal), rejected (a
mapping or parse error: dead letters), failure_store (9.1+: indexed into the data
stream's failure store instead, which is the dead letter). Tested on answers captured
from real Elasticsearch 8 and 9 and OpenSearch 2 and 3 (tests/data/bulk/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

INDEXED = "indexed"
DUPLICATE = "duplicate"
RETRY = "retry"
REJECTED = "rejected"
FAILURE_STORE = "failure_store"

# Per item only what decides its fate (filter_path keeps answers small; "errors" then
# comes first, which the all-created fast path relies on).
FILTER_PATH = (
    "errors,items.*.status,items.*.error.type,items.*.error.reason,"
    "items.*.error.caused_by.reason,items.*.failure_store"
)
BLOCK = "cluster_block_exception"
RETRY_STATUS = frozenset({401, 403, 404, 408, 429})


@dataclass(slots=True)
class Rejection:
    position: int
    status: int
    type: str
    reason: str


@dataclass(slots=True)
class Verdict:
    """The fate of each document of one bulk request, by position in the request."""

    indexed: int = 0
    duplicate: int = 0
    failure_store: int = 0
    retry: list[int] = field(default_factory=list)
    retry_statuses: set[int] = field(default_factory=set)
    blocked: int = 0  # of `retry`: refused by a cluster block (write block, flood stage)
    # statuses of the other retried items
    rejected: list[Rejection] = field(default_factory=list)
    mismatch: bool = False  # the answer does not fit the request: send all of it again

    def retry_reason(self) -> str:
        """The `shipper_retries_total` reason of the retried items that were not blocked."""
        return "item_" + "_".join(str(s) for s in sorted(self.retry_statuses))


def item_outcome(info: dict[str, Any]) -> str:
    """One item's fate from its `{"status":..., "error":..., "failure_store":...}`."""
    status = int(info.get("status", 0))
    if status in (200, 201):
        return FAILURE_STORE if info.get("failure_store") == "used" else INDEXED
    if status == 409:
        return DUPLICATE
    error = info.get("error") or {}
    if (isinstance(error, dict) and error.get("type") == BLOCK) or retryable_status(status):
        return RETRY
    return REJECTED


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500 or status == 0


def classify(body: bytes, count: int) -> Verdict:
    """The verdict on `count` documents from the raw body of a 200 `_bulk` answer."""
    if body.startswith(b'{"errors":false') and b'"failure_store"' not in body:
        # Every item created: not parsed at all (10,000 statuses cost more to decode than
        # the documents cost to encode).
        return Verdict(indexed=count)
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _all_again(count)
    items = response.get("items") if isinstance(response, dict) else None
    if items is None and isinstance(response, dict) and response.get("errors") is False:
        return Verdict(indexed=count)
    if not isinstance(items, list) or len(items) != count:
        return _all_again(count)
    verdict = Verdict()
    for position, result in enumerate(items):
        info = next(iter(result.values())) if result else {}
        outcome = item_outcome(info)
        if outcome == INDEXED:
            verdict.indexed += 1
        elif outcome == DUPLICATE:
            verdict.duplicate += 1
        elif outcome == FAILURE_STORE:
            verdict.failure_store += 1
        elif outcome == RETRY:
            verdict.retry.append(position)
            error = info.get("error") or {}
            if error.get("type") == BLOCK:
                verdict.blocked += 1
            else:
                verdict.retry_statuses.add(int(info.get("status", 0)))
        else:
            error = info.get("error") or {}
            reason = str(error.get("reason") or "")
            cause = (error.get("caused_by") or {}).get("reason")
            if cause:
                reason = f"{reason}: {cause}"
            status = int(info.get("status", 0))
            verdict.rejected.append(
                Rejection(position, status, error.get("type", "unknown"), reason)
            )
    return verdict


def _all_again(count: int) -> Verdict:
    return Verdict(retry=list(range(count)), mismatch=True)


# ---- whole-request answers ----------------------------------------------------------------

SPLIT = "split"  # 413, or 400 for several documents: halve the request and try again
REJECT_ONE = "reject"  # 400 for a single document: it goes to dead letters
BLOCKED = "blocked"  # a cluster block: retried, never dead-lettered
AGAIN = "again"  # everything else: the whole request is retried


def request_outcome(status: int, error_type: str, documents: int) -> str:
    """What to do with a `_bulk` request the server refused as a whole."""
    if error_type == BLOCK:
        return BLOCKED
    if status == 413:
        return SPLIT
    if status == 400:
        return SPLIT if documents > 1 else REJECT_ONE
    return AGAIN
