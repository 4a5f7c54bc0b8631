"""Elasticsearch as the distributed engine it is: a real 3-node cluster on loopback.

Each node is its own test-distribution process; they discover each other over their
transport ports. shipper is given every node. A node down when shipper starts must not
hold the others up; a node SIGKILLed mid-stream and brought back must cost nothing: every
line exactly once.
"""

from __future__ import annotations

import pytest

from tests.chaos.test_chaos import Writer, first_lines
from tests.harness.elasticsearch import EsTestClient
from tests.support import (
    KubeletDir,
    ShipperProcess,
    assert_exactly_once,
    es_config,
    seqs,
    stream_name,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.elasticsearch]


def test_three_nodes_one_down_at_start_one_killed_mid_stream_exactly_once(
    tmp_path, cluster_factory
):
    cluster = cluster_factory(3)
    one, two, three = cluster.nodes
    client = EsTestClient(one.url)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"node-{i}") for i in range(4)]
    three.kill()  # down before shipper starts: the others must not wait for it
    config = es_config(tmp_path, cluster.urls[0], ds)
    config["elasticsearch"]["bulk"].update(max_docs=500, timeout="10s")
    config["elasticsearch"]["hosts"] = [three.url, two.url, one.url]
    shipper = ShipperProcess(tmp_path, config).start()
    first = first_lines(dirs, client, ds)
    three.start()
    writer = Writer(dirs, 60_000, per_round=50, rotate_every=20_000, pace=0.02, first=first)
    writer.start()  # 10k lines/s for six seconds
    wait_for(lambda: client.count(ds) >= 15_000, 300, "documents flowing through three nodes")
    two.kill()  # mid-stream, with requests in flight to it
    wait_for(lambda: client.count(ds) >= 30_000, 300, "indexing to go on with two nodes")
    two.start()
    written = writer.finish()
    wait_for(lambda: client.count(ds) >= written, 600, f"{written} documents")
    wait_for(lambda: shipper.metrics().get("shipper_sink_hosts_up") == 3, 120, "all hosts up")
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    assert_exactly_once(seqs(client, ds), range(written))
    unreachable = metrics.get('shipper_bulk_requests_total{outcome="unreachable"}', 0)
    found = metrics.get('shipper_documents_checked_total{result="found"}', 0)
    print(f"{written} lines; {unreachable:.0f} requests unreachable, {found:.0f} looked up found")
