"""The "sent up to" marks: written before sending past them, and after a restart the
documents below them (and above the committed offset) are the uncertain range."""

from __future__ import annotations

import asyncio

from shipper.checkpoint import CheckpointStore, Entry
from shipper.kube.fragment import FileNameMetadata
from shipper.pipeline import Pipeline, PipelineOptions
from shipper.tail.tailer import TailOptions
from tests.support import CollectSink, KubeletDir, write_lines


def test_marks_round_trip_and_say_what_is_uncertain_after_a_restart(tmp_path):
    store = CheckpointStore.open(tmp_path)
    store.register("k|/d", Entry("/p", 0, 1, 1, scope="/d"))
    store.commit("k|/d", 100)
    store.mark_sent({"k|/d": 400, "other|/d": 50})
    store.mark_sent({"k|/d": 300})  # never lowered
    assert not store.resent("k|/d", 200)  # marks of this run say nothing about this run
    assert store.unmarked([("k|/d", 400)])  # not durable before the write
    store.save()
    assert not store.unmarked([("k|/d", 400), ("other|/d", 50)])
    assert store.unmarked([("k|/d", 401)])
    store.close()
    again = CheckpointStore.open(tmp_path)
    assert again.resent("k|/d", 100) and again.resent("k|/d", 399)
    assert not again.resent("k|/d", 400) and not again.resent("new|/d", 0)
    again.remove("k|/d")
    again.save()
    again.close()
    assert not CheckpointStore.open(tmp_path).resent("k|/d", 100)


def test_a_store_written_before_marks_existed_loads_with_none(tmp_path):
    store = CheckpointStore.open(tmp_path)
    store.register("k|/d", Entry("/p", 0, 1, 1, scope="/d"))
    store.commit("k|/d", 100)
    store.save()
    store.close()
    raw = (tmp_path / "checkpoints.json").read_bytes()
    assert b'"sent":{}' in raw
    again = CheckpointStore.open(tmp_path)
    assert again.sent == {} and not again.resent("k|/d", 0)


class MarkCheckingSink(CollectSink):
    """Records, for each batch it is sent, whether the marks on disk already covered it."""

    def __init__(self, ack, store_dir) -> None:
        super().__init__(ack)
        self.store_dir = store_dir
        self.covered: list[bool] = []

    async def send(self, batch) -> None:
        on_disk = CheckpointStore(directory=self.store_dir)
        on_disk._load()
        self.covered.append(
            all(seg.end <= on_disk.sent.get(seg.key, 0) for seg, _, _ in batch.parts)
        )
        await super().send(batch)


def test_the_pipeline_writes_the_marks_before_it_sends_and_a_restart_flags_the_re_read(tmp_path):
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 500)
    cp = tmp_path / "cp"
    sinks: list[MarkCheckingSink] = []

    def pipeline() -> Pipeline:
        options = PipelineOptions(
            tail=TailOptions(paths=(str(k.links / "*.log"),), watch=False, rescan_interval=0.0),
            batch_max_docs=100,
            once=True,
            mark_sent=True,
        )

        def factory(ack):
            sinks.append(MarkCheckingSink(ack, cp))
            return sinks[-1]

        return Pipeline(options, factory, CheckpointStore.open(cp), FileNameMetadata("node-1"))

    first = pipeline()
    asyncio.run(first.run())
    assert sinks[0].covered and all(sinks[0].covered)
    # As after a SIGKILL: the committed offset lost, the marks kept.
    store = CheckpointStore.open(cp)
    [key] = store.files
    size = store.files[key].offset
    assert store.sent[key] == size
    store.files[key].offset = 0
    store.save()
    store.close()
    second = pipeline()
    uncertain = []
    original = second.sink.send

    async def send(batch) -> None:
        uncertain.extend(seg.uncertain for seg, _, _ in batch.parts)
        await original(batch)

    second.sink.send = send  # type: ignore[method-assign]
    asyncio.run(second.run())
    assert uncertain and all(uncertain)  # every re-read document lies below the mark
