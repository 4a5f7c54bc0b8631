"""When the loop sends and when it waits: the last batch of `--once` goes at once, and
reading paused on a full buffer waits for acknowledgements only (no pause of its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shipper import pipeline as pipeline_module
from shipper.checkpoint import CheckpointStore
from shipper.kube.fragment import FileNameMetadata
from shipper.observe import Metrics
from shipper.pipeline import WAKE_INTERVAL, Pipeline, PipelineOptions
from shipper.tail.options import TailOptions
from tests.support import CollectSink, cri


def pipeline(tmp_path: Path, now: list[float], **options) -> Pipeline:
    log = tmp_path / "pods" / "ns_web-1_uid" / "app" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"".join(cri(i) for i in range(50)))
    tail = TailOptions(
        paths=(str(tmp_path / "pods/*/*/*.log"),),
        watch=False,
        rescan_interval=10.0,
        rotate_wait=0.0,
    )
    p = Pipeline(
        PipelineOptions(tail=tail, batch_max_delay=60.0, **options),
        CollectSink,
        CheckpointStore.open(None),
        FileNameMetadata("node-1"),
        Metrics(),
        clock=lambda: now[0],
    )
    p.tailer.rescan(now[0])
    return p


def test_once_sends_its_last_batch_when_everything_is_read_not_after_max_delay(tmp_path):
    now = [1000.0]
    p = pipeline(tmp_path, now, once=True)
    assert p.poll(now[0]) > 0
    now[0] += 0.01
    assert not p.batch_due(now[0]), "an open batch waits for more lines while files are read"
    assert p.poll(now[0]) == 0 and p._once_complete()
    p.finish_once(now[0])
    assert p.batch_due(now[0]), "nothing more will come: the last batch goes now"
    assert len(p.take_batch().entries) == 50


@pytest.mark.parametrize("buffer_full", [True, False])
def test_a_full_buffer_waits_for_an_acknowledgement_without_the_trickle_pause(
    tmp_path, monkeypatch, buffer_full
):
    now = [1000.0]
    # A buffer smaller than the 50 documents read: reading pauses until they are acked.
    p = pipeline(tmp_path, now, buffer_max_bytes=1024 if buffer_full else 64 << 20)
    p.poll(now[0])
    assert (p.room() <= 0) is buffer_full
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        pauses.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(pipeline_module.asyncio, "sleep", sleep)

    async def one_wait() -> None:
        p._wake = asyncio.Event()
        p._next_housekeeping = now[0] + 10.0
        p._last_wake = pipeline_module.time.monotonic()  # just woken: a pause would be due
        p._wake.set()  # an acknowledgement (or a file event) has come
        await p._sleep(now[0])

    asyncio.run(one_wait())
    paused = [d for d in pauses if d > 0]
    if buffer_full:
        assert paused == [], "waiting on a full buffer must not add a pause of its own"
    else:
        assert paused and paused[0] <= WAKE_INTERVAL, "trickling data is read in paced passes"


def test_a_full_buffer_sends_the_open_batch_only_when_no_other_is_at_the_sink(tmp_path):
    now = [1000.0]
    # 50 documents read in one pass, more than the buffer holds; batches of 20.
    p = pipeline(tmp_path / "a", now, batch_max_docs=20, buffer_max_bytes=4096)
    assert p.poll(now[0]) and p.room() <= 0
    at_sink = [p.take_batch(), p.take_batch()]
    assert [len(b.entries) for b in at_sink] == [20, 20]
    assert not p.batch_due(now[0]), "an acknowledgement will free room: the open batch fills on"
    alone = pipeline(tmp_path / "b", now, batch_max_docs=100, buffer_max_bytes=4096)
    assert alone.poll(now[0]) and alone.room() <= 0
    assert alone.batch_due(now[0]), "nothing at the sink: only sending the open batch frees room"
    assert len(alone.take_batch().entries) == 50
