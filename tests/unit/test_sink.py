"""The Elasticsearch sink over a scripted transport: accounting, dead letters, retries,
the uncertain-range lookup, cluster blocks and readiness. No server needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from shipper.acks import Segment
from shipper.config import Elasticsearch, parse_config
from shipper.observe import Metrics
from shipper.sinks.base import Batch
from shipper.sinks.elasticsearch import ElasticsearchSink, SinkStartError
from shipper.sinks.elasticsearch.transport import (
    ConnectFailed,
    RequestFailed,
    Response,
    TlsFailed,
)

ROOT = b'{"version":{"number":"9.5.3"}}'


class FakeTransport:
    """Answers each request with `handler(method, path, body)`; records every request."""

    def __init__(self, handler: Callable[[str, str, bytes], Any]) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, bytes]] = []

    async def request(
        self, method, path, body=None, params=None, headers=None, timeout=None, size=None
    ):
        if isinstance(body, list):  # a bulk body in pieces
            body = b"".join(body)
        # A size the caller gives is the Content-Length: it must be the body's.
        assert size is None or size == len(body or b""), (size, len(body or b""))
        self.requests.append((method, path, body or b""))
        answer = self.handler(method, path, body or b"")
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        return Response(status, {}, payload, "http://fake:9200")

    def alive(self) -> int:
        return 1

    async def close(self) -> None:
        return None

    def bulks(self, path: str = "/logs-t-default/_bulk") -> list[bytes]:
        return [body for method, p, body in self.requests if p == path]


def startup(method: str, path: str, body: bytes) -> tuple[int, bytes] | None:
    if path == "/":
        return 200, ROOT
    if path.startswith("/_index_template/"):
        return (404, b"{}") if method == "GET" else (200, b'{"acknowledged":true}')
    return None


def items(*statuses: int | str) -> tuple[int, bytes]:
    out = []
    for s in statuses:
        if s == "block":
            out.append({"create": {"status": 403, "error": {"type": "cluster_block_exception"}}})
        elif s == 400:
            out.append(
                {
                    "create": {
                        "status": 400,
                        "error": {"type": "mapper_parsing_exception", "reason": "bad"},
                    }
                }
            )
        else:
            out.append({"create": {"status": s}})
    errors = any(s != 201 for s in statuses)
    return 200, orjson.dumps({"errors": errors, "items": out})


def lookup(
    path: str, body: bytes, found: list[str], seen: list[tuple[str, bytes]] | None = None
) -> tuple[int, bytes] | None:
    """The answer to the uncertain-range lookup (refresh, then an ids search finding
    `found`); None for any other request. Searches are recorded in `seen`."""
    if path.endswith("/_refresh"):
        return 200, b"{}"
    if path.endswith("/_search"):
        if seen is not None:
            seen.append((path, body))
        return 200, orjson.dumps({"hits": {"hits": [{"_id": i} for i in found]}})
    return None


def created(body: bytes) -> tuple[int, bytes]:
    return items(*([201] * (body.count(b"\n") // 2)))


def batch(n: int, uncertain: bool = False) -> Batch:
    b = Batch()
    b.entries = [b'{"create":{"_id":"f-%d"}}\n{"message":"m %d"}\n' % (i, i) for i in range(n)]
    segment = Segment("key", 100, n, sum(map(len, b.entries)))
    segment.uncertain = uncertain
    b.add(segment, n, segment.size)
    return b


def config(**elastic: Any) -> Elasticsearch:
    text = orjson.dumps(
        {
            "elasticsearch": {
                "hosts": ["http://fake:9200"],
                "data_stream": "logs-t-default",
                "retry": {"initial_backoff": "1ms", "max_backoff": "1ms"},
                **elastic,
            }
        }
    ).decode()
    return parse_config(text, {}).elasticsearch


async def nothing(_: float) -> None:
    await asyncio.sleep(0)


def run(
    handler: Callable[[str, str, bytes], Any],
    batches: list[Batch],
    cfg: Elasticsearch | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[ElasticsearchSink, FakeTransport, list[Batch]]:
    transport = FakeTransport(lambda m, p, b: startup(m, p, b) or handler(m, p, b))
    acked: list[Batch] = []

    async def main() -> ElasticsearchSink:
        sink = ElasticsearchSink(
            cfg or config(),
            acked.append,
            Metrics(),
            sleep=nothing,
            transport=transport,
            **({"clock": clock} if clock else {}),
        )
        await sink.start()
        for b in batches:
            await sink.send(b)
        assert await sink.drain(10)
        await sink.close()
        return sink

    return asyncio.run(main()), transport, acked


def test_every_item_created_acknowledges_the_batch_after_one_request():
    sink, transport, acked = run(lambda m, p, b: created(b), [batch(5)])
    assert len(acked) == 1 and len(transport.bulks()) == 1
    assert sink.metrics.documents_indexed.total() == 5


def test_rejected_documents_of_one_answer_go_to_dead_letters_in_one_request():
    def handler(method, path, body):
        if path == "/_bulk":
            return created(body)
        return items(201, 400, 400, 201, 400)

    sink, transport, acked = run(handler, [batch(5)])
    [letters] = transport.bulks("/_bulk")
    assert letters.count(b'"_index":"shipper-dead-letter"') == 3
    assert b'"document_id":"f-1"' in letters and b'"document_id":"f-4"' in letters
    assert sink.metrics.dead_letters.total() == 3
    assert sink.metrics.documents_indexed.total() == 2 and len(acked) == 1


def test_a_400_on_the_dead_letter_write_is_counted_and_given_up_once():
    def handler(method, path, body):
        if path == "/_bulk":
            return 400, b'{"error":{"type":"illegal_argument_exception","reason":"no"}}'
        return items(400, 201)

    sink, transport, acked = run(handler, [batch(2)])
    assert len(transport.bulks("/_bulk")) == 1  # not retried
    assert sink.metrics.lines_given_up.get("dead_letter_rejected") == 1
    assert sink.metrics.dead_letters.total() == 0 and len(acked) == 1


def test_an_unexpected_error_resends_only_what_was_not_accounted_for():
    answers = iter([items(201, 201, 400, 429, 429), RuntimeError("a bug"), items(201, 201)])

    def handler(method, path, body):
        return created(body) if path == "/_bulk" else next(answers)

    sink, transport, acked = run(handler, [batch(5)])
    first, _, third = transport.bulks()
    assert first.count(b"\n") == 10 and third.count(b"\n") == 4
    assert b'"f-3"' in third and b'"f-4"' in third and b'"f-2"' not in third
    assert sink.metrics.dead_letters.total() == 1  # once, not again after the error
    assert sink.metrics.documents_indexed.total() == 4 and len(acked) == 1


def test_a_timed_out_request_is_looked_up_in_the_whole_target_before_it_is_sent_again():
    answers = iter([RequestFailed("http://fake:9200", "no answer within 60s")])
    searched: list[tuple[str, bytes]] = []

    def handler(method, path, body):
        return lookup(path, body, ["f-0", "f-2"], searched) or next(answers, None) or created(body)

    sink, transport, acked = run(handler, [batch(3)])
    [(_, query)] = searched
    assert orjson.loads(query)["query"]["ids"]["values"] == ["f-0", "f-1", "f-2"]
    _first, again = transport.bulks()
    assert again.count(b"\n") == 2 and b'"f-1"' in again
    paths = [p for _, p, _ in transport.requests]
    assert paths.index("/logs-t-default/_refresh") < paths.index("/logs-t-default/_search")
    m = sink.metrics
    assert m.documents_duplicate.total() == 2 and m.documents_indexed.total() == 1
    assert m.documents_checked.get("found") == 2 and m.documents_checked.get("absent") == 1
    assert len(acked) == 1


def test_a_failed_lookup_is_tried_again_before_anything_is_sent():
    lookups = iter([(503, b'{"error":{"type":"unavailable_shards_exception"}}'), None])

    def handler(method, path, body):
        if path.endswith("/_search"):
            return next(lookups) or lookup(path, body, ["f-0"])
        return lookup(path, body, []) or created(body)

    sink, transport, acked = run(handler, [batch(2, uncertain=True)])
    [sent] = transport.bulks()
    assert b'"f-0"' not in sent and b'"f-1"' in sent
    assert sink.metrics.documents_duplicate.total() == 1 and len(acked) == 1


def test_a_refused_connection_is_retried_without_a_lookup():
    answers = iter([ConnectFailed("http://fake:9200", "connection refused")])

    def handler(method, path, body):
        assert not path.endswith("/_search")
        return next(answers, None) or created(body)

    sink, transport, _acked = run(handler, [batch(3)])
    assert len(transport.bulks()) == 2 and sink.metrics.documents_indexed.total() == 3


def test_documents_of_the_uncertain_range_are_looked_up_before_their_first_request():
    def handler(method, path, body):
        return lookup(path, body, ["f-0", "f-1", "f-2"]) or created(body)

    sink, transport, acked = run(handler, [batch(3, uncertain=True), batch(2)])
    assert len(transport.bulks()) == 1  # the uncertain batch was all there; the other sent
    assert sink.metrics.documents_duplicate.total() == 3 and len(acked) == 2


def test_without_deterministic_ids_nothing_is_looked_up():
    def handler(method, path, body):
        assert not path.endswith("/_search")
        return created(body)

    _sink, transport, acked = run(
        handler, [batch(2, uncertain=True)], config(deterministic_ids=False)
    )
    assert len(transport.bulks()) == 1 and len(acked) == 1


def test_a_cluster_block_is_retried_never_dead_lettered_and_shows_in_metrics():
    answers = iter([items("block", "block"), items("block", "block"), items(201, 201)])

    def handler(method, path, body):
        assert path != "/_bulk", "nothing may go to dead letters"
        return next(answers)

    sink, _transport, acked = run(handler, [batch(2)])
    m = sink.metrics
    assert m.retries.get("cluster_block") == 4 and m.dead_letters.total() == 0
    assert m.sink_blocked.get() == 0.0 and len(acked) == 1


def test_a_request_refused_by_a_cluster_block_is_retried():
    block = b'{"error":{"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/8]"}}'
    answers = iter([(403, block), items(201)])
    sink, _transport, acked = run(lambda m, p, b: next(answers), [batch(1)])
    assert len(acked) == 1
    assert sink.metrics.retries.get("cluster_block") == 1 and sink.metrics.dead_letters.total() == 0


def test_413_splits_the_request_until_it_fits():
    def handler(method, path, body):
        if path == "/_bulk":
            return created(body)
        return (413, b"") if body.count(b"\n") > 4 else created(body)

    sink, _transport, acked = run(handler, [batch(8)])
    assert sink.metrics.bulk_requests.get("split") == 3
    assert sink.metrics.documents_indexed.total() == 8 and len(acked) == 1


def test_readiness_fails_only_after_unready_after_and_comes_back_on_recovery():
    now = [0.0]
    down = [True]
    ready: list[bool] = []

    def handler(method, path, body):
        if down[0]:
            now[0] += 10.0
            ready.append(sink_ref[0].ready())
            if now[0] > 60:
                down[0] = False
            return ConnectFailed("http://fake:9200", "connection refused")
        return created(body)

    sink_ref: list[ElasticsearchSink] = []
    transport = FakeTransport(lambda m, p, b: startup(m, p, b) or handler(m, p, b))

    async def main() -> None:
        sink = ElasticsearchSink(
            config(unready_after="30s"),
            lambda b: None,
            Metrics(),
            sleep=nothing,
            transport=transport,
            clock=lambda: now[0],
        )
        sink_ref.append(sink)
        await sink.start()
        await sink.send(batch(1))
        assert await sink.drain(10)
        ready.append(sink.ready())
        await sink.close()

    asyncio.run(main())
    assert ready[:3] == [True, True, True] and ready[4] is False and ready[-1] is True


def test_opensearch_is_detected_and_gets_flat_object_and_no_failure_store():
    puts: list[bytes] = []

    def handler(method, path, body):
        if path == "/":
            return 200, b'{"version":{"distribution":"opensearch","number":"2.19.6"}}'
        if path.startswith("/_index_template/") and method == "PUT":
            puts.append(body)
            return 200, b"{}"
        if path.startswith("/_index_template/"):
            return 404, b"{}"
        return created(body)

    transport = FakeTransport(handler)

    async def main() -> ElasticsearchSink:
        sink = ElasticsearchSink(
            config(), lambda b: None, Metrics(), sleep=nothing, transport=transport
        )
        await sink.start()
        await sink.send(batch(1))
        assert await sink.drain(10)
        await sink.close()
        return sink

    sink = asyncio.run(main())
    assert sink.server is not None and sink.server.engine == "opensearch"
    template = orjson.loads(puts[0])
    assert template["template"]["mappings"]["properties"]["json"] == {"type": "flat_object"}
    assert "data_stream_options" not in template["template"]


@pytest.mark.parametrize(
    "answer,message",
    [
        (
            TlsFailed("https://fake:9200", "certificate verify failed: self-signed"),
            "TLS verification",
        ),
        ((401, b'{"error":{"type":"security_exception","reason":"x"}}'), "refused the credentials"),
    ],
)
def test_start_up_errors_that_retrying_cannot_fix_are_fatal(answer, message):
    transport = FakeTransport(lambda m, p, b: answer)

    async def main() -> BaseException | None:
        sink = ElasticsearchSink(
            config(), lambda b: None, Metrics(), sleep=nothing, transport=transport
        )
        await sink.start()
        for _ in range(100):
            if sink.fatal() is not None:
                break
            await asyncio.sleep(0)
        await sink.close()
        return sink.fatal()

    fatal = asyncio.run(main())
    assert isinstance(fatal, SinkStartError) and message in str(fatal)


def test_the_daemon_imports_no_elasticsearch_client_stack():
    import subprocess
    import sys

    code = (
        "import sys, shipper.cli, shipper.app\n"
        "from shipper.sinks.elasticsearch import ElasticsearchSink\n"
        "heavy = ('elasticsearch', 'elastic_transport', 'aiohttp', 'opensearchpy')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_with_dated_indices_the_lookup_covers_every_index_of_the_pattern():
    # A line without a runtime time is filed under the day it was read: after a restart
    # on another day its re-send names another index, so only a lookup of all can tell.
    searched: list[tuple[str, bytes]] = []

    def handler(method, path, body):
        return lookup(path, body, ["f-0"], searched) or created(body)

    _sink, transport, acked = run(
        handler, [batch(2, uncertain=True)], config(index="logs-app-%Y.%m.%d")
    )
    assert [p for p, _ in searched] == ["/logs-app-*.*.*/_search"]  # the template's pattern
    [sent] = transport.bulks("/_bulk")
    assert b'"f-0"' not in sent and len(acked) == 1


def routed_batch() -> Batch:
    """Uncertain documents of three files: two routed streams and the configured one."""
    b = Batch()
    b.entries = [
        b'{"create":{"_index":"logs-t-kube_system","_id":"a-0"}}\n{"message":"a"}\n',
        b'{"create":{"_index":"logs-t-web","_id":"b-0"}}\n{"message":"b"}\n',
        b'{"create":{"_id":"c-0"}}\n{"message":"c"}\n',
        b'{"create":{"_index":"logs-t-kube_system","_id":"a-1"}}\n{"message":"a"}\n',
    ]
    segment = Segment("key", 100, 4, sum(map(len, b.entries)))
    segment.uncertain = True
    b.add(segment, 4, segment.size)
    return b


def test_routed_documents_are_looked_up_in_the_stream_their_action_names():
    searched: list[tuple[str, bytes]] = []
    found = {"/logs-t-kube_system/_search": ["a-1"], "/logs-t-web/_search": ["b-0"]}

    def handler(method, path, body):
        if path.endswith("/_search"):
            searched.append((path, body))
            hits = [{"_id": i} for i in found.get(path, [])]
            return 200, orjson.dumps({"hits": {"hits": hits}})
        return lookup(path, body, []) or created(body)

    sink, transport, acked = run(handler, [routed_batch()])
    looked = {p: orjson.loads(q)["query"]["ids"]["values"] for p, q in searched}
    assert looked == {
        "/logs-t-kube_system/_search": ["a-0", "a-1"],
        "/logs-t-web/_search": ["b-0"],
        "/logs-t-default/_search": ["c-0"],  # no _index: the request's default target
    }
    [sent] = transport.bulks()  # POST /logs-t-default/_bulk, each routed action names its own
    assert b'"a-0"' in sent and b'"c-0"' in sent and b'"a-1"' not in sent and b'"b-0"' not in sent
    assert sink.metrics.documents_duplicate.total() == 2 and len(acked) == 1


def templates_put(installed: dict | None, patterns: list[str] | None) -> list[dict]:
    """The document templates a sink PUTs at start, given what is installed."""
    puts: list[dict] = []

    def handler(method, path, body):
        if path == "/":
            return 200, ROOT
        if path.startswith("/_index_template/shipper-logs-t-default"):
            if method == "PUT":
                puts.append(orjson.loads(body))
                return 200, b"{}"
            if installed is None:
                return 404, b"{}"
            return 200, orjson.dumps({"index_templates": [{"index_template": installed}]})
        if path.startswith("/_index_template/"):
            return (404, b"{}") if method == "GET" else (200, b"{}")
        return created(body)

    async def main() -> None:
        sink = ElasticsearchSink(
            config(),
            lambda b: None,
            Metrics(),
            sleep=nothing,
            transport=FakeTransport(handler),
            patterns=patterns,
        )
        await sink.start()
        await sink.send(batch(1))
        assert await sink.drain(10)
        await sink.close()

    asyncio.run(main())
    return puts


def test_the_template_covers_every_routed_stream_and_maps_the_new_fields_as_keywords():
    [template] = templates_put(None, ["logs-t-*", "logs-t.*-*"])
    assert template["index_patterns"] == ["logs-t-*", "logs-t.*-*"]
    props = template["template"]["mappings"]["properties"]
    keyword = {"type": "keyword", "ignore_above": 1024}
    assert props["log"]["properties"]["level"] == keyword
    assert props["service"]["properties"] == {"name": keyword, "version": keyword}
    assert props["data_stream"]["properties"] == {
        "type": keyword,
        "dataset": keyword,
        "namespace": keyword,
    }
    assert props["event"]["properties"] == {"dataset": keyword}


def test_turning_routing_on_widens_an_installed_template_of_the_same_version():
    from shipper.sinks.elasticsearch.templates import TEMPLATE_VERSION

    narrow = {"version": TEMPLATE_VERSION, "index_patterns": ["logs-t-default"]}
    [widened] = templates_put(narrow, ["logs-t-*"])
    assert widened["index_patterns"] == ["logs-t-*"]
    assert templates_put({**narrow, "index_patterns": ["logs-t-*"]}, ["logs-t-*"]) == []
    assert templates_put(narrow, None) == []  # routing off: the installed one covers it
    assert templates_put({"version": TEMPLATE_VERSION + 1, "index_patterns": []}, ["x-*"]) == []
    [upgraded] = templates_put({"version": TEMPLATE_VERSION - 1, "index_patterns": []}, None)
    assert upgraded["version"] == TEMPLATE_VERSION
