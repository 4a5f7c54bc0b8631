"""The gauges, and the counters kept by the stages themselves, brought up to date from what
each stage knows: when metrics are scraped, and once more when a run ends.

The pipeline hands its stages over (it is the one place that holds them all); nothing here
is on the hot path.
"""

from __future__ import annotations

import time

from shipper.acks import AckTracker
from shipper.checkpoint import CheckpointStore
from shipper.files import FileStage
from shipper.observe import Metrics
from shipper.sinks.base import Sink
from shipper.tail.tailer import Tailer


def update(
    m: Metrics,
    tailer: Tailer,
    tracker: AckTracker,
    store: CheckpointStore,
    files: FileStage,
    sink: Sink,
) -> None:
    """Each stage's state read into `m`: files followed and open, bytes in flight, the lag
    behind the files, the checkpoint's age, the tailer's and decoders' counts, readiness."""
    cursors = tailer.cursors
    m.files_followed.set(len(cursors))
    m.files_open.set(tailer.open_files())
    m.in_flight.set(tracker.in_flight_bytes)
    lag = 0
    for cursor in cursors:
        size = cursor.stat_size()
        entry = store.get(cursor.key)
        committed = entry.offset if entry is not None else 0
        if size is not None:
            lag += max(size - committed, 0)
    m.lag.set(lag)
    last = store.last_save
    m.checkpoint_age.set(time.time() - last if last else 0.0)
    stats = tailer.stats
    m.rotations.set_total(stats.rotations)
    m.truncations.set_total(stats.truncations)
    m.bytes_truncated.set_total(stats.truncated_bytes + files.decoder_dropped)
    for reason, nbytes in stats.given_up_bytes.items():
        m.bytes_given_up.set_total(nbytes, reason)
    for flag, count in files.encode_stats.flags.items():
        m.events_flagged.set_total(count, flag)
    m.up.set(1.0 if sink.ready() else 0.0)
