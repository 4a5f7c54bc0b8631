"""The controls in the encoder and their construction from the config: log.level, data
stream fields and `_index`, redaction; one `line_controls(cfg)` for all of them."""

from __future__ import annotations

import orjson
import pytest

from parsers.events import MULTILINE, LogEvent
from shipper.config import parse_config
from shipper.controls import Throttle, line_controls, template_patterns
from shipper.datastream import DataStream
from shipper.document import DocumentEncoder
from shipper.kube.fragment import MetadataHandle
from shipper.limits import LimitOverride, RateLimit
from shipper.observe import Metrics

TS = b"2026-12-01T10:00:00.000000000Z"


def encode(encoder: DocumentEncoder, *messages: bytes, flags=()) -> list[tuple[dict, dict]]:
    events = [LogEvent(TS, b"stdout", m, i * 100, tuple(flags)) for i, m in enumerate(messages)]
    out: list[bytes] = []
    size = encoder.encode(events, TS, out)
    assert size == sum(map(len, out))
    docs = []
    for entry in out:
        action, doc = entry.rstrip(b"\n").split(b"\n")
        docs.append((orjson.loads(action)["create"], orjson.loads(doc)))
    return docs


def es_encoder(**kw) -> DocumentEncoder:
    return DocumentEncoder("/var/log/containers/a.log", b'"host":{"name":"n"}', True, b"p-", **kw)


@pytest.mark.parametrize(
    ("message", "level"),
    [
        (b"2026-12-01 10:00:00,123 ERROR [main] c.e.App - boom", "error"),
        (b'{"level":"WARNING","msg":"disk"}', "warn"),
        (b"time=2026-12-01T10:00:00Z level=debug msg=x", "debug"),
        (b"I1201 10:00:00.000000       1 main.go:10] started", "info"),
        (b"an error happened in the middle", None),
    ],
)
def test_documents_carry_the_detected_level_under_log(message, level):
    (_, doc), *_ = encode(es_encoder(level=True), message)
    assert doc["log"].get("level") == level
    assert doc["log"]["offset"] == 0 and doc["log"]["file"]["path"].endswith("a.log")
    assert doc["message"] == message.decode()


def test_level_off_writes_no_level():
    (_, doc), *_ = encode(es_encoder(level=False), b"ERROR: boom")
    assert "level" not in doc["log"]


def test_a_joined_stack_trace_takes_the_level_of_its_first_line_and_keeps_its_flags():
    trace = (
        b"ERROR Request failed\njava.lang.IllegalStateException: WARN inside\n\tat x.y(Z.java:1)"
    )
    (_, doc), *_ = encode(es_encoder(level=True), trace, flags=(MULTILINE,))
    assert doc["log"]["level"] == "error" and doc["log"]["flags"] == ["multiline"]


def test_parsed_json_takes_the_level_from_its_fields():
    enc = es_encoder(level=True, parse_json=True)
    (_, doc), (_, plain) = encode(enc, b'{"msg":"x","log":{"level":"Fatal"}}', b"[WARN] text")
    assert doc["log"]["level"] == "fatal" and doc["json"] == {"msg": "x", "log": {"level": "Fatal"}}
    assert plain["log"]["level"] == "warn" and "json" not in plain


def test_the_stream_fields_and_the_index_action_are_the_files_target():
    enc = es_encoder(level=True)
    stream = DataStream("logs", "kubernetes", "kube_system")
    enc.set_stream(stream.fields, stream.name)
    (action, doc), (action2, _) = encode(enc, b"INFO one", b"two")
    assert action == {"_index": "logs-kubernetes-kube_system", "_id": "p-0"}
    assert action2["_id"] == "p-64"
    assert doc["data_stream"] == {
        "type": "logs",
        "dataset": "kubernetes",
        "namespace": "kube_system",
    }
    assert doc["event"] == {"dataset": "kubernetes"} and doc["host"] == {"name": "n"}
    enc.set_metadata(b'"host":{"name":"m"}')  # a metadata change keeps the stream
    (action, doc), *_ = encode(enc, b"three")
    assert action["_index"] == "logs-kubernetes-kube_system" and doc["host"]["name"] == "m"
    assert doc["data_stream"]["namespace"] == "kube_system"
    enc.set_stream(b"", None)
    (action, doc), *_ = encode(enc, b"four")
    assert "_index" not in action and "data_stream" not in doc


def test_generated_ids_also_name_the_routed_index():
    enc = DocumentEncoder("/f.log", b"", actions=True, id_prefix=None)
    enc.set_stream(DataStream("logs", "k", "a").fields, "logs-k-a")
    (action, doc), *_ = encode(enc, b"x")
    assert action == {"_index": "logs-k-a"} and doc["data_stream"]["namespace"] == "a"


def test_redaction_replaces_secrets_and_flags_only_changed_documents():
    controls = line_controls(parse_config("redaction:\n  builtin:\n    passwords: true\n"))
    enc = es_encoder(redactor=controls.redactor, parse_json=True)
    docs = encode(
        enc,
        b"login password=hunter2 ok",
        b"nothing here",
        b'{"user":"a","db_password":"s3cret","msg":"token=abc"}',
    )
    (_, changed), (_, clean), (_, parsed) = docs
    assert "hunter2" not in changed["message"] and "[REDACTED]" in changed["message"]
    assert changed["log"]["flags"] == ["redacted"]
    assert clean["message"] == "nothing here" and "flags" not in clean["log"]
    assert parsed["json"]["db_password"] == "[REDACTED]" and parsed["json"]["user"] == "a"
    assert "s3cret" not in orjson.dumps(parsed).decode() and "abc" not in parsed["message"]
    assert parsed["log"]["flags"] == ["redacted"]
    assert enc.stats.flags == {"redacted": 2}


def test_custom_rules_use_their_replacement():
    text = (
        "redaction:\n  rules:\n    - name: sid\n      pattern: 'sid=[0-9a-f]{8}'\n"
        "      replacement: sid=XXX\n"
    )
    enc = es_encoder(redactor=line_controls(parse_config(text)).redactor)
    (_, doc), *_ = encode(enc, b"user sid=deadbeef in")
    assert doc["message"] == "user sid=XXX in" and doc["log"]["flags"] == ["redacted"]


def test_default_controls_detect_levels_and_nothing_else():
    controls = line_controls(parse_config(""))
    assert controls.level and controls.redactor is None and not controls.routed
    assert controls.router is not None and controls.router.base.name == "logs-kubernetes-default"
    handle = MetadataHandle(b"", dataset="nginx", rate_limit=None)
    assert controls.stream("kube-system", handle) is controls.router.base
    assert controls.index_name(controls.stream("kube-system", handle)) is None
    assert controls.limit("kube-system", handle) is None
    assert template_patterns(parse_config("")) is None
    assert not line_controls(parse_config("parsing:\n  level: false\n")).level


def test_dated_indices_carry_no_data_stream_fields():
    controls = line_controls(parse_config("elasticsearch:\n  index: logs-%Y.%m.%d\n"))
    assert controls.router is None and controls.stream("ns", MetadataHandle(b"")) is None


def test_routing_controls_name_each_namespace_and_dataset_stream():
    cfg = parse_config("routing:\n  per_namespace: true\n  dataset_annotation: true\n")
    controls = line_controls(cfg)
    plain, hinted = MetadataHandle(b""), MetadataHandle(b"", dataset="Nginx")
    assert controls.index_name(controls.stream("kube-system", plain)) == (
        "logs-kubernetes-kube_system"
    )
    assert controls.index_name(controls.stream("web", hinted)) == "logs-kubernetes.nginx-web"
    assert controls.index_name(controls.stream("default", plain)) is None  # the configured one
    assert template_patterns(cfg) == ["logs-kubernetes-*", "logs-kubernetes.*-*"]


def test_limits_come_from_namespace_config_and_annotation():
    cfg = parse_config(
        "limits:\n  lines_per_second: 100\n  namespaces:\n    batch:\n      lines_per_second: 5\n"
    )
    controls = line_controls(cfg)
    assert controls.limit("web", MetadataHandle(b"")) == RateLimit(100.0)
    assert controls.limit("batch", MetadataHandle(b"")) == RateLimit(5.0)
    own = MetadataHandle(b"", rate_limit=LimitOverride(lines_per_second=7))
    assert controls.limit("batch", own) == RateLimit(7.0)
    off = MetadataHandle(b"", rate_limit=LimitOverride(0.0, 0.0, 0.0, 0.0))
    assert controls.limit("web", off) is None
    ignored = line_controls(parse_config("limits:\n  lines_per_second: 9\n  annotations: false\n"))
    assert ignored.limit("web", own) == RateLimit(9.0)


def test_a_containers_files_share_one_limiter_and_drops_are_counted_per_namespace():
    metrics = Metrics()
    throttle = Throttle(metrics)
    key = ("noisy", "pod", "app")
    first = throttle.acquire(key, RateLimit(10.0), 0.0, None)
    second = throttle.acquire(key, RateLimit(10.0), 0.0, None)
    assert first is second is not None
    changed = throttle.acquire(key, RateLimit(20.0), 0.0, second)  # a new annotation
    assert changed is not first and changed.limit == RateLimit(20.0)
    throttle.release(key, first)  # the other file, still on the old one: nothing to free
    assert throttle.limiters[key].limiter is changed
    throttle.release(key, changed)
    assert key not in throttle.limiters
    throttle.dropped(key, 3, 30, now=1.0)
    throttle.dropped(key, 2, 20, now=2.0)
    assert metrics.events_throttled.get("noisy") == 5
    assert metrics.bytes_throttled.get("noisy") == 50


def test_drops_are_logged_with_their_counts_at_most_once_an_interval(caplog):
    throttle = Throttle(Metrics(), interval=10.0)
    key = ("noisy", "flood", "app")
    with caplog.at_level("WARNING", logger="shipper.controls"):
        throttle.dropped(key, 4, 40, now=100.0)
        throttle.dropped(key, 6, 60, now=105.0)  # within the interval: held
        throttle.report(106.0)
        assert len(caplog.records) == 1
        throttle.report(111.0)  # due: the held counts
    first, second = caplog.records
    assert first.containers == {"noisy/flood/app": {"lines": 4, "bytes": 40}}
    assert second.containers == {"noisy/flood/app": {"lines": 6, "bytes": 60}}
    throttle.report(200.0)
    assert len(caplog.records) == 2  # nothing dropped since: nothing to say
