"""`shipper run` as operators meet it: graceful stop under load, and its /metrics."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from tests.harness.elasticsearch import EsTestClient
from tests.support import (
    KubeletDir,
    ShipperProcess,
    assert_exactly_once,
    cri,
    es_config,
    seqs,
    shipper_config,
    stream_name,
    wait_for,
    write_lines,
)

pytestmark = pytest.mark.elasticsearch


def test_sigterm_under_load_exits_0_and_a_restart_resumes_exactly_once(tmp_path, es_url, es_client):
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"load-{i}") for i in range(4)]
    config = shipper_config(
        [str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url, shutdown={"grace": "20s"}
    )
    config["elasticsearch"]["data_stream"] = ds
    written = 0
    stop_writing = threading.Event()

    def writer() -> None:  # about 40k lines/s: more than shipper indexes on two cores
        nonlocal written
        while not stop_writing.is_set():
            for k in dirs:
                write_lines(k, written, 500)
                written += 500
            time.sleep(0.05)  # the workload's pace

    first = ShipperProcess(tmp_path, config).start()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_for(lambda: es_client.count(ds) >= 50_000, 300, "50000 documents")
    in_flight = first.metrics().get("shipper_in_flight_bytes", 0)
    assert first.stop(timeout=20 + 10) == 0, first.logs()[-2000:]  # within the grace period
    stop_writing.set()
    thread.join()
    assert "shutdown grace period over" not in first.logs()
    at_stop = es_client.count(ds)
    assert at_stop < written, "the signal came after everything was shipped: no load"

    second = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: es_client.count(ds) >= written, 300, f"{written} documents")
    metrics = second.metrics()
    assert second.stop() == 0
    # The clean stop committed exactly what was acknowledged: nothing is sent twice.
    assert metrics.get("shipper_documents_duplicate_total", 0) == 0
    assert_exactly_once(seqs(es_client, ds), range(written))
    print(f"{written} lines; {at_stop} indexed at SIGTERM with {in_flight:.0f} bytes in flight")


def test_metrics_after_a_run_match_what_was_written(tmp_path, es_url, es_client):
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"m-{i}") for i in range(3)]
    for i, k in enumerate(dirs):
        write_lines(k, i * 1000, 1000)
    dirs[0].write(b"this line is not CRI\n")
    dirs[1].write(cri(5000, tag="P", text="first half ") + cri(5001, text="second half"))
    lines = 3 * 1000 + 1 + 2
    events = 3 * 1000 + 1 + 1
    size = sum(k.live.stat().st_size for k in dirs)
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url)
    config["elasticsearch"]["data_stream"] = ds
    shipper = ShipperProcess(tmp_path, config).start()
    wait_for(
        lambda: (
            shipper.metrics().get("shipper_documents_indexed_total") == events
            and shipper.metrics().get("shipper_lag_bytes") == 0
        ),
        120,
        "every document indexed and committed",
    )
    m = shipper.metrics()
    port = shipper.metrics_port()
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            assert response.status == 200, path
    assert shipper.stop() == 0
    assert es_client.count(ds) == events
    assert es_client.count(ds, {"match_phrase": {"message": "first half second half"}}) == 1
    assert m["shipper_lines_read_total"] == lines
    assert m["shipper_read_bytes_total"] == size
    assert m["shipper_events_total"] == events
    assert m['shipper_events_flagged_total{flag="parse_error"}'] == 1
    assert m.get("shipper_documents_duplicate_total", 0) == 0
    assert m.get("shipper_dead_letters_total", 0) == 0
    assert m["shipper_files_followed"] == 3
    assert m["shipper_in_flight_bytes"] == 0
    assert m["shipper_sink_up"] == 1
    assert m["shipper_delivery_delay_seconds_count"] == events
    assert m['shipper_bulk_requests_total{outcome="ok"}'] >= 1
    assert m["shipper_sent_bytes_total"] > size  # documents are bigger than the lines
    assert m["shipper_checkpoint_age_seconds"] < 60
    summary = shipper.summary()
    assert summary["lines_read"] == lines and summary["documents_indexed"] == events


def test_sigterm_while_elasticsearch_hangs_exits_0_after_the_grace_and_loses_nothing(
    tmp_path, es_server_factory
):
    server = es_server_factory()
    client = EsTestClient(server.url)
    ds = stream_name()
    k = KubeletDir(tmp_path)
    config = es_config(
        tmp_path,
        server.url,
        ds,
        shutdown={"grace": "1s"},
        elasticsearch={"bulk": {"max_delay": "50ms", "max_docs": 100}},
    )
    write_lines(k, 0, 1_000)
    first = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: client.count(ds) >= 1_000, 120, "the first 1000 documents")
    server.freeze()
    try:
        write_lines(k, 1_000, 1_000)
        wait_for(
            lambda: first.metrics().get("shipper_in_flight_bytes", 0) > 0,
            60,
            "documents waiting for the frozen Elasticsearch",
        )
        assert first.stop(timeout=30) == 0, first.logs()[-2000:]
    finally:
        server.freeze(False)
    logs = first.logs()
    assert "shutdown grace period over" in logs
    assert "Task was destroyed" not in logs and "Traceback" not in logs, logs[-3000:]

    second = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: client.count(ds) >= 2_000, 120, "all 2000 documents")
    assert second.stop() == 0
    assert_exactly_once(seqs(client, ds), range(2_000))
