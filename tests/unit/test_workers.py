"""Several workers: their checkpoint stores follow the number of workers, and their
metrics are served as one."""

from __future__ import annotations

from shipper.checkpoint import CheckpointStore, Entry
from shipper.observe import Metrics, parse_exposition
from shipper.shares import share_of
from shipper.stores import absorb_workers, distribute, worker_dir
from shipper.workers import merge_expositions


def store_with(tmp_path, scopes: list[str]) -> CheckpointStore:
    store = CheckpointStore.open(tmp_path)
    for i, scope in enumerate(scopes):
        key = f"fp{i}|{scope}|0.log"
        store.register(key, Entry(f"/l/{i}", 0, 1, i, scope=scope, stream="0.log", fp=f"fp{i}"))
        store.commit(key, 100 + i)
        store.mark_sent({key: 200 + i})
    store.horizons[scopes[0]] = "20240301-000001"
    store.save()
    return store


def test_entries_move_to_the_worker_that_owns_their_directory_and_back(tmp_path):
    scopes = [f"/var/log/pods/ns_p{i}_uid/app" for i in range(12)]
    root = store_with(tmp_path, scopes)
    since = root.since
    distribute(root, 3)
    assert root.files == {} and root.horizons == {}
    root.close()
    seen = {}
    for w in range(3):
        store = CheckpointStore.open(worker_dir(tmp_path, w))
        assert abs(store.since - since) < 0.01 and not store.fresh  # not a first start here
        for key, entry in store.files.items():
            assert share_of(entry.scope, 3) == w
            seen[key] = (entry.offset, store.resent_until[key])
        assert (scopes[0] in store.horizons) == (share_of(scopes[0], 3) == w)
        store.close()
    assert seen == {f"fp{i}|{s}|0.log": (100 + i, 200 + i) for i, s in enumerate(scopes)}
    root = CheckpointStore.open(tmp_path)
    distribute(root, 2)  # three workers become two: worker-2's entries move too
    assert not worker_dir(tmp_path, 2).exists()
    absorb_workers(root)  # and one again
    assert {k: e.offset for k, e in root.files.items()} == {k: v[0] for k, v in seen.items()}
    assert root.horizons == {scopes[0]: "20240301-000001"}
    assert not worker_dir(tmp_path, 0).exists() and not worker_dir(tmp_path, 1).exists()
    root.close()
    again = CheckpointStore.open(tmp_path)
    assert again.resent_until == {k: v[1] for k, v in seen.items()}
    again.close()


def exposition(indexed: float, up: float, delay: list[float], retries: dict[str, float]) -> str:
    m = Metrics()
    m.documents_indexed.inc(indexed)
    m.up.set(up)
    for d in delay:
        m.delay.observe(d)
    for reason, n in retries.items():
        m.retries.inc(n, reason)
    return m.render().decode()


def test_the_metrics_of_the_workers_are_one_exposition():
    a = exposition(100, 1, [0.1, 3], {"connection": 5})
    b = exposition(250, 0, [0.2], {"http_429": 2})
    merged = merge_expositions([a, b])
    values = parse_exposition(merged)
    assert values["shipper_documents_indexed_total"] == 350
    assert values["shipper_sink_up"] == 0  # one worker cannot reach the sink: not up
    assert values['shipper_delivery_delay_seconds_bucket{le="0.25"}'] == 2
    assert values['shipper_delivery_delay_seconds_bucket{le="+Inf"}'] == 3
    assert values['shipper_retries_total{reason="connection"}'] == 5
    assert values['shipper_retries_total{reason="http_429"}'] == 2  # only the second had it
    buckets = [line for line in merged.splitlines() if "_bucket" in line]
    assert buckets == sorted(buckets, key=lambda line: float(line.split('"')[1]))
    assert merged.count("# TYPE shipper_documents_indexed_total counter") == 1


def test_reload_metrics_of_the_workers_merge_into_counts_and_the_latest_time():
    workers = []
    for applied, refused, loaded in ((2, 1, 1000.0), (1, 0, 2000.0)):
        m = Metrics()
        m.config_reloads.inc(applied, "applied")
        if refused:
            m.config_reloads.inc(refused, "refused")
        m.config_info.set(1.0, "abc123")
        m.config_reload_time.set(loaded)
        workers.append(m.render().decode())
    values = parse_exposition(merge_expositions(workers))
    assert values['shipper_config_reloads_total{result="applied"}'] == 3
    assert values['shipper_config_reloads_total{result="refused"}'] == 1
    assert values['shipper_config_info{hash="abc123"}'] == 2  # both workers run that config
    assert values["shipper_config_last_reload_timestamp_seconds"] == 2000.0
