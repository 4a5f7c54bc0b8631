"""The demo: ship a generated node's logs into a local Elasticsearch and show what landed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shipper.samples import write_tree  # noqa: E402
from tests.harness.elasticsearch import ElasticsearchServer, EsTestClient  # noqa: E402

DATA_STREAM = "logs-kubernetes-demo"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="shipper-demo-"))
    print(f"working in {work}")
    print("starting a local Elasticsearch (the official test distribution)...", flush=True)
    es = ElasticsearchServer(work / "elasticsearch", heap="1g")
    es.start()
    print(f"Elasticsearch {es.version} at {es.url}")
    try:
        manifest = write_tree(work / "node", lines_per_container=2000)
        logs = work / "node" / "var" / "log" / "containers"
        print(
            f"\ngenerated a node's log tree: {len(manifest['per_container'])} containers, "
            f"{manifest['records']} log lines (CRI and docker formats) under {logs}"
        )
        config = {
            "inputs": {"paths": [f"{logs}/*.log"]},
            "checkpoint": {"path": str(work / "checkpoints")},
            "kubernetes": {
                "pods_file": manifest["pods_file"],
                "node_name": "node-1",
                "annotations": ["shipper.io/team"],
            },
            "elasticsearch": {"hosts": [es.url], "data_stream": DATA_STREAM},
            "metrics": {"listen": ""},
            "logging": {"format": "text"},
        }
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [str(ROOT / ".venv/bin/shipper"), "run", "--once", "--config", str(config_path)]
        print(f"\n$ shipper run --once --config {config_path}", flush=True)
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        print(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "")
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        show(EsTestClient(es.url), manifest["records"])
        if os.environ.get("KEEP") == "1":
            print(f"\nElasticsearch keeps running at {es.url} (Ctrl-C to stop)")
            try:
                while es.is_running():
                    es._proc.wait()  # type: ignore[union-attr]
            except KeyboardInterrupt:
                pass
    finally:
        es.stop()
    return 0


def show(client: EsTestClient, written: int) -> None:
    total = client.count(DATA_STREAM)
    print(
        f"\n{total} documents in {DATA_STREAM} (written: {written} lines; stack traces "
        "are joined into one document each by the pod's shipper.io/multiline hint)"
    )
    aggs = client.search(
        DATA_STREAM,
        {
            "size": 0,
            "aggs": {
                "ns": {
                    "terms": {"field": "kubernetes.namespace"},
                    "aggs": {"pod": {"terms": {"field": "kubernetes.pod.name"}}},
                }
            },
        },
    )["aggregations"]["ns"]["buckets"]
    print("\ndocuments per namespace and pod:")
    for ns in aggs:
        print(f"  {ns['key']:<12} {ns['doc_count']:>6}")
        for pod in ns["pod"]["buckets"]:
            print(f"    {pod['key']:<32} {pod['doc_count']:>6}")
    query = {
        "bool": {
            "filter": [
                {"term": {"kubernetes.namespace": "shop"}},
                {"match": {"message": "timeout"}},
            ]
        }
    }
    hits = client.search(DATA_STREAM, {"size": 2, "query": query, "sort": [{"@timestamp": "asc"}]})[
        "hits"
    ]
    print(
        f"\nsearch kubernetes.namespace:shop AND message:timeout -> "
        f"{hits['total']['value']} hits; the first:"
    )
    for hit in hits["hits"]:
        print("  " + orjson.dumps(hit["_source"]).decode()[:400])
    trace = client.search(DATA_STREAM, {"size": 1, "query": {"term": {"log.flags": "multiline"}}})
    for hit in trace["hits"]["hits"]:
        doc = hit["_source"]
        print(
            f"\na joined Java stack trace from {doc['kubernetes']['pod']['name']} "
            f"({doc['kubernetes'].get('statefulset', {}).get('name', '?')} statefulset):"
        )
        print("  " + doc["message"].replace("\n", "\n  "))


if __name__ == "__main__":
    raise SystemExit(main())
