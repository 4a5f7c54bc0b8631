"""Several workers: their checkpoint stores follow the number of workers, and their
metrics are served as one."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.checkpoint import CheckpointError, CheckpointStore, Entry
from shipper.observe import Metrics, parse_exposition
from shipper.shares import PLAN_FILE, Share, plan_shares, read_plan, share_of, write_plan
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
    plan = {scope: i % 3 for i, scope in enumerate(scopes[:9])}  # the last 3 by hash
    owner = Share(0, 3, plan).owner
    distribute(root, 3, plan)
    assert root.files == {} and root.horizons == {}
    root.close()
    seen = {}
    for w in range(3):
        store = CheckpointStore.open(worker_dir(tmp_path, w))
        assert abs(store.since - since) < 0.01 and not store.fresh  # not a first start here
        for key, entry in store.files.items():
            assert owner(entry.scope) == w
            seen[key] = (entry.offset, store.resent_until[key])
        assert (scopes[0] in store.horizons) == (owner(scopes[0]) == w)
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


@given(
    sizes=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**9), max_size=60),
    workers=st.integers(1, 5),
)
def test_a_plan_gives_every_directory_one_worker_and_balances_their_bytes(sizes, workers):
    plan = plan_shares(sizes, workers)
    assert plan.keys() == sizes.keys() and all(0 <= w < workers for w in plan.values())
    assert plan == plan_shares(dict(reversed(sizes.items())), workers)  # order-free
    loads = [sum(sizes[s] for s, w in plan.items() if w == i) for i in range(workers)]
    # Largest first, each to the least loaded: no worker ends more than one directory
    # above another.
    assert max(loads) - min(loads) <= max(sizes.values(), default=0)
    if not any(sizes.values()):  # nothing written yet: the directories are spread
        counts = [list(plan.values()).count(i) for i in range(workers)]
        assert max(counts) - min(counts) <= 1


def test_hashing_alone_can_leave_one_worker_most_of_a_backlog_a_plan_does_not():
    sizes = {f"/var/log/pods/ns_p{i}_uid/app": (i % 7 + 1) * 10**6 for i in range(50)}
    by_hash = [sum(v for s, v in sizes.items() if share_of(s, 2) == w) for w in (0, 1)]
    plan = plan_shares(sizes, 2)
    planned = [sum(v for s, v in sizes.items() if plan[s] == w) for w in (0, 1)]
    assert max(planned) / sum(planned) <= 0.51
    assert max(planned) <= max(by_hash)


def test_workers_read_the_plan_written_for_their_number_and_refuse_a_damaged_one(tmp_path):
    plan = {"/var/log/pods/a/app": 1, "/var/log/pods/b/app": 0}
    write_plan(tmp_path, 2, plan)
    assert read_plan(tmp_path, 2) == plan
    share = Share(1, 2, read_plan(tmp_path, 2))
    assert share.owns("/var/log/pods/a/app") and not share.owns("/var/log/pods/b/app")
    new = "/var/log/pods/new/app"
    assert share.owner(new) == share_of(new, 2)  # not planned: by hash
    assert read_plan(tmp_path, 3) == {}  # planned for another number: hashing alone
    (tmp_path / PLAN_FILE).write_bytes(b'{"workers": 2, "plan": [1, 2]}')
    with pytest.raises(CheckpointError, match="unreadable"):
        read_plan(tmp_path, 2)
    assert read_plan(tmp_path / "nowhere", 2) == {}


SUPERVISE = """
import dataclasses, os, sys
from shipper.config import default_config
from shipper.workers import Supervisor

base = default_config()
cfg = dataclasses.replace(
    base,
    workers=3,
    inputs=dataclasses.replace(base.inputs, paths=(sys.argv[1] + "/logs/*.log",)),
    checkpoint=dataclasses.replace(base.checkpoint, path=sys.argv[1] + "/cp"),
    metrics=dataclasses.replace(base.metrics, listen=""),
)
codes = [int(c) for c in sys.argv[2].split(",")]

def serve(index, report_fd):  # a worker's whole life, in the forked child
    ran = f"{sys.argv[1]}/ran-{index}"
    with open(ran + ".tmp", "w") as out:
        out.write(str(os.getppid()))
    os.rename(ran + ".tmp", ran)  # whole or absent, even if the supervisor stops us
    os.write(report_fd, b'{"port": 1}\\n')
    if codes[index]:  # a failing worker ends the others: let them have said who forked them
        while not all(os.path.exists(f"{sys.argv[1]}/ran-{i}") for i in range(len(codes))):
            os.sched_yield()
    return codes[index]

print(Supervisor(cfg, "unused.yaml", once=True, serve=serve).main([]))
"""


@pytest.mark.parametrize(("codes", "exit_code"), [("0,0,0", 0), ("0,2,0", 2), ("1,0,0", 1)])
def test_the_supervisor_forks_its_workers_and_a_fatal_exit_code_is_its_own(
    tmp_path, codes, exit_code
):
    """In a process of its own (a fork needs one thread): every worker runs as a child of
    the supervisor, and a worker's config error (2) or runtime failure (1) ends the whole
    with that code, where `--once` workers that finish (0) end it cleanly."""
    import subprocess
    import sys

    (tmp_path / "logs").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", SUPERVISE, str(tmp_path), codes],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split()[-1] == str(exit_code), done.stderr
    parents = {(tmp_path / f"ran-{i}").read_text() for i in range(3)}
    assert len(parents) == 1 and parents != {str(os.getpid())}, "one supervisor forked all"


@pytest.mark.parametrize("reported", [False, True])
def test_a_workers_report_pipe_is_closed_once_it_exits_even_before_its_reader_ran(
    monkeypatch, tmp_path, reported
):
    """The exit can be seen before the task reading the report has taken one step; the
    pipe's read end is closed all the same, and the port is read when it came first."""
    import asyncio
    import dataclasses

    from shipper import workers
    from shipper.config import default_config

    base = default_config()
    cfg = dataclasses.replace(
        base, workers=2, checkpoint=dataclasses.replace(base.checkpoint, path=str(tmp_path))
    )
    sup = workers.Supervisor(cfg, "unused.yaml", once=True, serve=None)
    w = sup.workers[0]

    async def run() -> int:
        read_fd, write_fd = os.pipe()
        w.pid, w.report_fd = 12345, read_fd
        if reported:
            os.write(write_fd, b'{"port": 9}\n')
        os.close(write_fd)
        seen = []

        async def exits(pid: int) -> int:
            if reported:  # let the reader run to its end first
                while w.report_fd >= 0:
                    await asyncio.sleep(0)
                seen.append(w.port)
            return 0  # with no await at all: the reader never started

        monkeypatch.setattr(workers, "exited", exits)
        code = await sup._wait(w)
        with pytest.raises(OSError):
            os.fstat(read_fd)
        assert w.report_fd == -1 and w.pid == 0
        assert seen == ([9] if reported else [])
        return code

    assert asyncio.run(run()) == 0


def test_a_cancelled_report_reader_leaves_a_restarted_workers_pipe_open(monkeypatch, tmp_path):
    """The worker exits while its reader waits; the pipe is closed and a new one, for the
    worker started again, takes the same number before the cancelled reader runs."""
    import asyncio
    import dataclasses

    from shipper import workers
    from shipper.config import default_config

    base = default_config()
    cfg = dataclasses.replace(
        base, workers=2, checkpoint=dataclasses.replace(base.checkpoint, path=str(tmp_path))
    )
    sup = workers.Supervisor(cfg, "unused.yaml", once=True, serve=None)
    w = sup.workers[0]

    async def run() -> None:
        read_fd, write_fd = os.pipe()
        w.pid, w.report_fd = 12345, read_fd

        async def exits(pid: int) -> int:
            for _ in range(3):  # the reader is waiting for the report by now
                await asyncio.sleep(0)
            return 0

        monkeypatch.setattr(workers, "exited", exits)
        await sup._wait(w)
        again, again_write = os.pipe()  # the restart's pipe, before the loop turns
        assert again == read_fd, "the staging needs the number taken again"
        w.report_fd = again
        for _ in range(3):
            await asyncio.sleep(0)
        os.fstat(again)  # still open
        assert w.report_fd == again
        for fd in (again, again_write, write_fd):
            os.close(fd)

    asyncio.run(run())
