"""The bulk classifier on answers captured from real servers (tests/harness/capture_bulk.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipper.sinks.elasticsearch.classify import (
    AGAIN,
    BLOCKED,
    DUPLICATE,
    FAILURE_STORE,
    INDEXED,
    REJECT_ONE,
    REJECTED,
    RETRY,
    SPLIT,
    classify,
    item_outcome,
    request_outcome,
)
from shipper.sinks.elasticsearch.client import error_of

DATA = Path(__file__).resolve().parents[1] / "data" / "bulk"
ENGINES = ["elasticsearch-8", "elasticsearch-9", "opensearch-2", "opensearch-3"]


def canned(engine: str, case: str) -> tuple[int, int, bytes]:
    data = json.loads((DATA / f"{engine}-{case}.json").read_text())
    return data["status"], data["documents"], data["body"].encode()


@pytest.mark.parametrize("engine", ENGINES)
def test_all_created_takes_the_fast_path_without_parsing(engine):
    status, count, body = canned(engine, "all_created")
    assert status == 200 and body.startswith(b'{"errors":false')
    verdict = classify(body, count)
    assert (verdict.indexed, verdict.retry, verdict.rejected) == (3, [], [])


@pytest.mark.parametrize("engine", ENGINES)
def test_created_rejected_and_duplicate_are_told_apart(engine):
    _, count, body = canned(engine, "created_rejected_duplicate")
    verdict = classify(body, count)
    assert (verdict.indexed, verdict.duplicate, verdict.retry) == (1, 1, [])
    [rejection] = verdict.rejected
    assert rejection.position == 1 and rejection.status == 400
    assert rejection.type in ("document_parsing_exception", "mapper_parsing_exception")
    assert "1969" in rejection.reason and "epoch" in rejection.reason  # caused_by joined in


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case,status", [("write_block", 403), ("read_only_allow_delete", 429)])
def test_cluster_blocks_are_retried_never_rejected(engine, case, status):
    _, count, body = canned(engine, case)
    verdict = classify(body, count)
    assert verdict.retry == [0] and verdict.blocked == 1 and not verdict.rejected
    assert verdict.retry_statuses == set()  # counted as cluster_block, not item_<status>
    info = json.loads(body)["items"][0]["create"]
    assert info["status"] == status and item_outcome(info) == RETRY


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_refused_as_a_whole_is_split_then_rejected_alone(engine):
    status, _, body = canned(engine, "request_refused")
    kind, reason = error_of(body, status)
    assert status == 400 and kind.endswith("exception") and reason
    assert request_outcome(status, kind, 10) == SPLIT
    assert request_outcome(status, kind, 1) == REJECT_ONE


def test_failure_store_redirect_counts_as_indexed_into_the_failure_store():
    _, count, body = canned("elasticsearch-9", "failure_store_used")
    verdict = classify(body, count)  # "failure_store" in the body: no fast path
    assert (verdict.indexed, verdict.failure_store) == (1, 1)


@pytest.mark.parametrize(
    "info,outcome",
    [
        ({"status": 201}, INDEXED),
        ({"status": 200}, INDEXED),
        ({"status": 201, "failure_store": "used"}, FAILURE_STORE),
        ({"status": 201, "failure_store": "not_enabled"}, INDEXED),
        ({"status": 409, "error": {"type": "version_conflict_engine_exception"}}, DUPLICATE),
        ({"status": 429, "error": {"type": "es_rejected_execution_exception"}}, RETRY),
        ({"status": 503, "error": {"type": "unavailable_shards_exception"}}, RETRY),
        ({"status": 404, "error": {"type": "index_not_found_exception"}}, RETRY),
        ({"status": 400, "error": {"type": "mapper_parsing_exception"}}, REJECTED),
        ({"status": 400, "error": {"type": "illegal_argument_exception"}}, REJECTED),
    ],
)
def test_item_outcomes(info, outcome):
    assert item_outcome(info) == outcome


def test_a_response_that_does_not_match_the_request_sends_everything_again():
    verdict = classify(b'{"errors":true,"items":[{"create":{"status":201}}]}', 2)
    assert verdict.mismatch and verdict.retry == [0, 1]
    assert classify(b"<html>proxy error</html>", 3).retry == [0, 1, 2]


def test_item_retries_are_named_by_their_statuses():
    body = (
        b'{"errors":true,"items":[{"create":{"status":429}},{"create":{"status":503}},'
        b'{"create":{"status":201}}]}'
    )
    verdict = classify(body, 3)
    assert verdict.retry == [0, 1] and verdict.retry_reason() == "item_429_503"


def test_whole_request_outcomes():
    assert request_outcome(413, "413", 5) == SPLIT
    assert request_outcome(403, "cluster_block_exception", 5) == BLOCKED
    assert request_outcome(429, "cluster_block_exception", 5) == BLOCKED
    assert request_outcome(429, "es_rejected_execution_exception", 5) == AGAIN
    assert request_outcome(503, "503", 5) == AGAIN
