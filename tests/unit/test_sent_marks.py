"""The "sent up to" marks: written before sending past them, and after a restart the
documents below them (and above the committed offset) are the uncertain range."""

from __future__ import annotations

import asyncio

from shipper.checkpoint import CheckpointStore, Entry
from shipper.kube.fragment import FileNameMetadata
from shipper.pipeline import Pipeline, PipelineOptions
from shipper.storefile import MARKS_NAME, STORE_NAME, decode_marks
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


def on_disk_marks(directory) -> dict[str, int]:
    return decode_marks((directory / MARKS_NAME).read_bytes())


def test_only_marks_of_what_is_in_flight_are_kept_and_written(tmp_path):
    store = CheckpointStore.open(tmp_path)
    for key in ("a|/d", "b|/d"):
        store.register(key, Entry("/p", 0, 1, 1, scope="/d"))
    store.mark_sent({"a|/d": 100, "b|/d": 100})
    store.save()
    store.commit("a|/d", 100)  # acknowledged: a's mark covers nothing any more
    store.save()
    # One store write holds the offset; the previous copy, used if the newest is damaged,
    # does not yet: the mark stays.
    assert on_disk_marks(tmp_path) == {"a|/d": 100, "b|/d": 100}
    store.save()
    assert on_disk_marks(tmp_path) == {"b|/d": 100}
    assert b'"sent"' not in (tmp_path / STORE_NAME).read_bytes()  # the marks are apart
    store.close()
    again = CheckpointStore.open(tmp_path)
    assert again.resent("b|/d", 99) and not again.resent("b|/d", 100)
    assert not again.resent("a|/d", 99) and again.get("a|/d").offset == 100
    again.close()


class MarkCheckingSink(CollectSink):
    """Records, for each batch it is sent, whether the marks on disk already covered it."""

    def __init__(self, ack, store_dir) -> None:
        super().__init__(ack)
        self.store_dir = store_dir
        self.covered: list[bool] = []
        self.on_disk: dict[str, bytes] = {}  # the store's files as the last batch left them

    async def send(self, batch) -> None:
        on_disk = CheckpointStore(directory=self.store_dir)
        on_disk._load()
        self.covered.append(
            all(seg.end <= on_disk.sent.get(seg.key, 0) for seg, _, _ in batch.parts)
        )
        self.on_disk = {p.name: p.read_bytes() for p in self.store_dir.iterdir()}
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
    # As after a SIGKILL once the last batch was handed to the sink: the store's files as
    # they were then.
    for p in cp.iterdir():
        p.unlink()
    for name, data in sinks[0].on_disk.items():
        (cp / name).write_bytes(data)
    store = CheckpointStore.open(cp)
    [(key, mark)] = store.resent_until.items()
    assert mark == (k.directory / "0.log").stat().st_size  # everything read was marked
    assert store.get(key) is None or store.get(key).offset < mark
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


def test_the_outbox_sends_each_batch_in_order_once_a_write_covering_it_is_on_disk():
    """put() never waits for the disk; a batch past the durable marks leaves only after a
    write that began once it was marked; batches leave in the order they came."""
    from shipper.outbox import Outbox
    from shipper.sinks.base import Batch

    state = {"marked": 0, "durable": 0, "read": 0}
    sent: list[int] = []
    writes: list[int] = []
    gate = asyncio.Event()

    def needs(batch: Batch) -> bool:
        return batch.created > state["durable"]

    def mark() -> None:
        state["marked"] = state["read"]  # everything read so far

    async def write() -> None:
        covers = state["marked"]
        writes.append(covers)
        await gate.wait()
        state["durable"] = covers

    async def send(batch: Batch) -> None:
        assert batch.created <= state["durable"], "sent before its marks were on disk"
        sent.append(int(batch.created))

    async def main() -> None:
        box = Outbox(needs, mark, write, send)
        for n in (1, 2):
            state["read"] = n
            await box.put(Batch(created=n))
        await asyncio.sleep(0)  # the write of 1 and 2 has begun; the disk is slow
        assert sent == [] and writes == [2]
        state["read"] = 3
        await box.put(Batch(created=3))  # not waiting for the disk either
        gate.set()
        await box.flush()
        assert sent == [1, 2, 3] and writes == [2, 3]
        state["read"] = 3
        await box.put(Batch(created=3))  # covered already: straight to the sink
        assert sent == [1, 2, 3, 3] and writes == [2, 3]

    asyncio.run(main())
