"""Stopping: what would die with the process is read first."""

from __future__ import annotations

import asyncio

from shipper.checkpoint import CheckpointStore
from shipper.kube.fragment import FileNameMetadata
from shipper.pipeline import Pipeline, PipelineOptions
from shipper.tail.options import TailOptions
from tests.support import CollectSink, KubeletDir, documents, write_lines


class SlowSink(CollectSink):
    """Acknowledges each batch one loop turn later, so reading runs behind."""

    async def send(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.sent.append(batch)
        asyncio.get_running_loop().call_soon(self.ack, batch)


def test_a_deleted_file_held_open_is_read_to_its_end_before_shipper_exits(tmp_path):
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 40_000)  # about 2.4 MB: far more than one pass of reading
    sinks: list[SlowSink] = []

    def factory(ack):  # type: ignore[no-untyped-def]
        sinks.append(SlowSink(ack))
        return sinks[-1]

    options = PipelineOptions(
        tail=TailOptions(paths=(str(k.links / "*.log"),), watch=False, rescan_interval=0.5),
        buffer_max_bytes=256 * 1024,
        read_bytes=64 * 1024,
        batch_max_docs=500,
        shutdown_grace=60.0,
    )
    pipeline = Pipeline(options, factory, CheckpointStore.open(tmp_path / "cp"), FileNameMetadata())

    async def run() -> None:
        task = asyncio.create_task(pipeline.run())
        while not sinks or not sinks[0].sent:
            await asyncio.sleep(0)  # a loop turn: the pipeline reads and sends its first batch
        k.remove()  # the container is gone: only the descriptor keeps the file
        pipeline.stop()
        await task

    asyncio.run(run())
    messages = [doc["message"] for batch in sinks[0].sent for _, doc in documents(batch)]
    assert len(messages) == 40_000 and len(set(messages)) == 40_000
    assert pipeline.tailer.stats.given_up_bytes == {}
