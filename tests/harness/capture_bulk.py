"""Capture real `_bulk` answers for the classifier's unit tests (tests/data/bulk/).

Starts each test distribution, installs shipper's template, and records the raw body of
the answers shipper's requests get (with its filter_path): all created; created +
rejected + duplicate; a write block; a read-only-allow-delete (flood-stage) block; and a
request refused as a whole. Run it again after an engine upgrade:

    python -m tests.harness.capture_bulk [--out tests/data/bulk]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from shipper.sinks.elasticsearch.classify import FILTER_PATH
from shipper.sinks.elasticsearch.templates import document_template
from tests.harness.distribution import ELASTICSEARCH, ES_VERSIONS, OPENSEARCH, OS_VERSIONS
from tests.harness.elasticsearch import ElasticsearchServer, EsTestClient

STREAM = "logs-capture-default"
GOOD = b'{"@timestamp":"2024-03-01T10:00:00.123456789Z","message":"seq %d","log":{"offset":%d}}'
OLD = b'{"@timestamp":"1969-07-20T20:17:40Z","message":"before 1970","log":{"offset":99}}'


def entry(doc_id: str, doc: bytes) -> bytes:
    return b'{"create":{"_id":"%s"}}\n%s\n' % (doc_id.encode(), doc)


def raw_bulk(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/{STREAM}/_bulk?filter_path={FILTER_PATH}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-ndjson", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def capture(engine: str, version: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="capture-") as work:
        server = ElasticsearchServer(Path(work), version, engine=engine)
        server.start()
        try:
            client = EsTestClient(server.url)
            template = document_template([STREAM], True, False, engine=engine)
            status, answer = client.request("PUT", "/_index_template/capture", template)
            assert status == 200, answer
            cases = {
                "all_created": b"".join(entry(f"a{i}", GOOD % (i, i)) for i in range(3)),
                "created_rejected_duplicate": entry("b1", GOOD % (1, 1))
                + entry("b2", OLD)
                + entry("a0", GOOD % (0, 0)),
            }
            recorded = {name: raw_bulk(server.url, body) for name, body in cases.items()}
            settings = f"/{STREAM}/_settings"
            for name, setting in (
                ("write_block", "index.blocks.write"),
                ("read_only_allow_delete", "index.blocks.read_only_allow_delete"),
            ):
                assert client.request("PUT", settings, {setting: True})[0] == 200
                recorded[name] = raw_bulk(server.url, entry("c1", GOOD % (5, 5)))
                assert client.request("PUT", settings, {setting: None})[0] == 200
            recorded["request_refused"] = raw_bulk(server.url, b'{"create":{"_id":\n{}\n')
            major = version.split(".")[0]
            for name, (status, body) in recorded.items():
                path = out / f"{engine}-{major}-{name}.json"
                count = cases[name].count(b"\n") // 2 if name in cases else 1
                path.write_text(
                    json.dumps(
                        {
                            "engine": engine,
                            "version": version,
                            "status": status,
                            "documents": count,
                            "body": body.decode(),
                        },
                        indent=2,
                    )
                    + "\n"
                )
                print(f"{path}: {status} {body[:120]!r}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.capture_bulk")
    parser.add_argument("--out", type=Path, default=Path("tests/data/bulk"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for version in ES_VERSIONS:
        capture(ELASTICSEARCH, version, args.out)
    for version in OS_VERSIONS:
        capture(OPENSEARCH, version, args.out)


if __name__ == "__main__":
    main()
