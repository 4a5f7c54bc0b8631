"""What each answer means for a batch's documents, and what follows from it.

Before a request, the uncertain documents the target already holds are accounted for
(lookup.py). After it, a bulk answer is judged item by item (classify.py): indexed,
duplicate and failure-store documents are accounted for, rejected ones dead-lettered
(deadletter.py), the rest tried again. A request refused as a whole is split (413),
rejected (a single document that cannot be indexed) or retried; a cluster block is
retried until it is lifted. Each step returns the positions still to send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shipper.config import Elasticsearch
from shipper.observe import Metrics
from shipper.sinks.elasticsearch import classify as verdicts
from shipper.sinks.elasticsearch.client import ApiError, Client, error_of
from shipper.sinks.elasticsearch.deadletter import DeadLetters, Letter
from shipper.sinks.elasticsearch.lookup import already_indexed, entry_target
from shipper.sinks.elasticsearch.queue import Work
from shipper.sinks.elasticsearch.retries import Retries
from shipper.sinks.elasticsearch.templates import target_patterns
from shipper.sinks.elasticsearch.transport import TransportError

# The sink's lines keep the logger they were always written under (filters name it).
log = logging.getLogger("shipper.sinks.elasticsearch.sink")


class Outcomes:
    def __init__(
        self,
        cfg: Elasticsearch,
        metrics: Metrics,
        retries: Retries,
        send: Callable[[Work, list[int]], Awaitable[None]],
    ) -> None:
        self.metrics = metrics
        self.retries = retries
        self._send = send  # each half of a split request, until accounted for
        # Fixed for the process (the reload keeps these keys).
        self._deterministic_ids = cfg.deterministic_ids
        self._dated = bool(cfg.index)
        # Where the uncertain range is looked for: the data stream (all backing indices),
        # or every index a dated pattern can produce. A routed document is looked for in
        # the stream its action names.
        self._lookup_target = ",".join(target_patterns(cfg.data_stream, cfg.index))
        self.client: Client | None = None
        self.dead_letters: DeadLetters | None = None

    def connect(self, client: Client, dead_letters: DeadLetters) -> None:
        """The client and dead-letter writer the next steps use (at start, on a reload)."""
        self.client = client
        self.dead_letters = dead_letters

    async def skip_indexed(self, work: Work, positions: list[int]) -> list[int] | None:
        """Account for the uncertain documents among `positions` the target already holds;
        the rest, or None when the lookup failed (try again later)."""
        if not work.uncertain or not self._deterministic_ids:
            return positions
        uncertain = [p for p in positions if p in work.uncertain]
        if not uncertain:
            return positions
        entries = work.batch.entries
        ids: dict[int, str | None] = {}
        # Each document is looked for where it was sent: its own stream when its action
        # names one (routing), else the configured target. Dated indices: the pattern.
        by_target: dict[str, list[str]] = {}
        for p in uncertain:
            index, id_ = entry_target(entries[p])
            ids[p] = id_
            if id_:
                where = self._lookup_target if self._dated or not index else index
                by_target.setdefault(where, []).append(id_)
        assert self.client is not None
        try:
            found: set[str] = set()
            for where, wanted in by_target.items():
                found |= await already_indexed(self.client, where, wanted)
        except (TransportError, ApiError) as exc:
            self.retries.failing()
            self.retries.log("looking up re-sent documents failed; retrying", exc)
            return None
        there = [p for p, i in ids.items() if i in found]
        self.metrics.documents_checked.inc(len(there), "found")
        self.metrics.documents_checked.inc(len(uncertain) - len(there), "absent")
        self.metrics.documents_duplicate.inc(len(there))
        work.account(there)
        work.uncertain.difference_update(uncertain)  # known absent now
        gone = set(there)
        return [p for p in positions if p not in gone]

    async def refused(
        self, work: Work, positions: list[int], status: int, body: bytes
    ) -> list[int] | None:
        """A `_bulk` refused as a whole: the positions to retry, None when handled."""
        kind, reason = error_of(body, status)
        outcome = verdicts.request_outcome(status, kind, len(positions))
        if outcome == verdicts.SPLIT:
            self.metrics.bulk_requests.inc(1, "split")
            if len(positions) == 1:
                await self._reject(work, [(positions[0], 413, "request_too_large", reason)])
                return None
            half = len(positions) // 2
            await self._send(work, positions[:half])
            await self._send(work, positions[half:])
            return None
        if outcome == verdicts.REJECT_ONE:
            await self._reject(work, [(positions[0], status, kind, reason)])
            return None
        self.metrics.bulk_requests.inc(1, "error")
        self.retries.failing()
        if outcome == verdicts.BLOCKED:
            self.retries.blocked(len(positions), status, reason)
        else:
            self.metrics.retries.inc(len(positions), f"http_{status}")
            self.retries.log(
                "bulk request failed; retrying",
                None,
                status=status,
                error_type=kind,
                documents=len(positions),
            )
            if status >= 500:  # a proxy's 502/504 or a node failing mid-request
                work.uncertain.update(positions)
        return self.retries.still_trying(work, positions, f"http_{status}")

    async def judge(self, work: Work, positions: list[int], body: bytes) -> list[int]:
        """Account for each item of a bulk answer; return the positions to try again."""
        verdict = verdicts.classify(body, len(positions))
        metrics = self.metrics
        if verdict.mismatch:
            log.error(
                "bulk response does not match the request; sending it again",
                extra={"documents": len(positions)},
            )
            work.uncertain.update(positions)
            return self.retries.still_trying(work, positions, "bad_response")
        retry = [positions[i] for i in verdict.retry]
        accepted = len(positions) - len(retry) - len(verdict.rejected)
        if accepted:
            self.retries.recovered()
        elif retry:
            self.retries.failing()
        metrics.documents_indexed.inc(verdict.indexed + verdict.failure_store)
        metrics.documents_duplicate.inc(verdict.duplicate)
        metrics.dead_letters.inc(verdict.failure_store)
        partial = bool(retry or verdict.rejected or verdict.failure_store)
        metrics.bulk_requests.inc(1, "partial" if partial else "ok")
        if verdict.rejected:
            rejected = verdict.rejected
            await self._reject(
                work, [(positions[r.position], r.status, r.type, r.reason) for r in rejected]
            )
        work.account(set(positions).difference(retry) if retry else positions)
        if verdict.blocked:
            self.retries.blocked(verdict.blocked, 0, "")
        others = len(retry) - verdict.blocked
        if others:
            metrics.retries.inc(others, verdict.retry_reason())
            self.retries.log(
                "some documents were refused for now; retrying them", None, documents=others
            )
        return self.retries.still_trying(work, retry, "item")

    async def _reject(self, work: Work, rejected: list[tuple[int, int, str, str]]) -> None:
        """Dead-letter these positions (one request for all of them), then account them."""
        assert self.dead_letters is not None
        entries = work.batch.entries
        await self.dead_letters.write([Letter(entries[p], s, t, r) for p, s, t, r in rejected])
        work.account([p for p, *_ in rejected])
