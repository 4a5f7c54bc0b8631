"""The tailer as a state machine on real files, checked against a simple model.

Random interleavings of appends, kubelet rotations (rename, gzip of older rotations),
deletions of the oldest rotation (the kubelet keeps a few), copy-truncates, container
removals, new containers, reads with and without acknowledgements, checkpoint saves, and
restarts of the reader, clean or abandoned (kill -9: whatever was not saved is lost). The
model: every line written is delivered at least once, unless it sat in a file that was
deleted before the reader ever opened it; a line delivered twice always carries the same
document id (Elasticsearch keeps one), and is delivered twice only if it was in the
unacknowledged window of an abandoned reader.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    precondition,
    rule,
)

from shipper.checkpoint import CheckpointStore
from shipper.tail.identity import id_prefix
from tests.support import Driver, KubeletDir, cri, gzip_file


class Container:
    """One container's files in the model: which lines each holds, and under which inodes
    (a gzip-compressed rotation is also readable through the descriptor of its original)."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = KubeletDir(root, pod=name)
        self.files: dict[Path, list[int]] = {}
        self.inodes: dict[Path, set[int]] = {}
        self._new_live()

    def _new_live(self) -> None:
        self.files[self.dir.live] = []
        self.inodes[self.dir.live] = {self.dir.live.stat().st_ino}

    def _move(self, old: Path, new: Path) -> None:
        self.files[new] = self.files.pop(old)
        self.inodes[new] = self.inodes.pop(old) | {new.stat().st_ino}

    def rotate(self) -> None:
        live = self.dir.live
        rotated = self.dir.rotate(compress_older=False)
        self._move(live, rotated)
        self._new_live()
        for path in sorted(p for p in self.files if p.name.startswith("0.log.2")):
            if path != rotated and path.suffix != ".gz":
                self._move(path, gzip_file(path))

    def copy_truncate(self) -> None:
        self.dir.rotations += 1
        copy = self.dir.directory / f"0.log.20240301-{self.dir.rotations:06d}"
        shutil.copyfile(self.dir.live, copy)
        os.truncate(self.dir.live, 0)
        self.files[copy] = self.files[self.dir.live]
        self.inodes[copy] = {copy.stat().st_ino}
        self.files[self.dir.live] = []


class TailerMachine(RuleBasedStateMachine):
    containers = Bundle("containers")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="shipper-model-"))
        self.seq = itertools.count()
        self.names = itertools.count()
        self.written: set[int] = set()
        self.exempt: set[int] = set()
        self.ids: dict[int, str] = {}
        self.deliveries: dict[int, int] = defaultdict(int)
        self.may_repeat: set[int] = set()
        self.seen_deliveries = 0
        self.driver = Driver(
            [str(self.root / "containers" / "*.log")],
            checkpoint_dir=self.root / "checkpoints",
            read_bytes=8192,
            buffer_max_bytes=1 << 30,
            tail={"chunk_bytes": 4096},
        )
        self.running = True
        self.live: list[Container] = []
        self.removed: list[Container] = []
        self.deleted: list[list[int]] = []  # lines of rotations the runtime deleted

    def teardown(self) -> None:
        try:
            if not self.running:
                self.start()
            self.check_nothing_lost()
        finally:
            self.driver.stop(clean=False)
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- the world ------------------------------------------------------------------------

    @initialize(target=containers)
    def first_container(self) -> Container:
        return self.new_container_impl()

    @rule(target=containers)
    def new_container(self) -> Container:
        return self.new_container_impl()

    def new_container_impl(self) -> Container:
        c = Container(self.root, f"pod-{next(self.names)}")
        self.live.append(c)
        return c

    @rule(c=containers, n=st.integers(1, 40), stream=st.sampled_from(["stdout", "stderr"]))
    def append(self, c: Container, n: int, stream: str) -> None:
        if c not in self.live:
            return
        seqs = [next(self.seq) for _ in range(n)]
        c.dir.write(b"".join(cri(s, stream) for s in seqs))
        c.files[c.dir.live].extend(seqs)
        self.written.update(seqs)

    @rule(c=containers)
    def rotate(self, c: Container) -> None:
        if c in self.live:
            c.rotate()

    @rule(c=containers)
    def copy_truncate(self, c: Container) -> None:
        if c in self.live and c.files[c.dir.live]:
            c.copy_truncate()

    @rule(c=containers)
    def delete_oldest_rotation(self, c: Container) -> None:
        if c not in self.live:
            return
        rotations = sorted(p for p in c.files if p != c.dir.live)
        if not rotations:
            return
        path = rotations[0]
        self._exempt_unopened({path: c.files[path]}, {path: c.inodes[path]})
        self.deleted.append(c.files.pop(path))
        del c.inodes[path]
        path.unlink()

    @rule(c=consumes(containers))
    def remove(self, c: Container) -> None:
        if c not in self.live:
            return
        self._exempt_unopened(c.files, c.inodes)
        c.dir.remove()
        self.live.remove(c)
        self.removed.append(c)

    def _exempt_unopened(self, files: dict[Path, list[int]], inodes: dict[Path, set[int]]) -> None:
        """Files about to be deleted: lines not delivered yet are lost unless the reader
        holds the file open (then it reads them through its descriptor)."""
        open_inodes = set()
        if self.running:
            open_inodes = {cur.ino for cur in self.driver.tailer.cursors if cur.is_open}
        for path, seqs in files.items():
            if not inodes[path] & open_inodes:
                self.exempt.update(s for s in seqs if self.deliveries[s] == 0)

    # ---- the reader -----------------------------------------------------------------------

    @precondition(lambda self: self.running)
    @rule(ack=st.booleans(), passes=st.integers(1, 30))
    def read(self, ack: bool, passes: int) -> None:
        self.driver.step(ack=ack, max_passes=passes)
        self.record()

    @precondition(lambda self: self.running)
    @rule()
    def acknowledge_held(self) -> None:
        self.driver.ack_held()

    @precondition(lambda self: self.running)
    @rule()
    def save(self) -> None:
        self.driver.save()

    @precondition(lambda self: self.running)
    @rule(clean=st.booleans())
    def stop(self, clean: bool) -> None:
        if not clean:
            self.note_unacknowledged_window()
        # Deleted files held open die with the process: their unread lines are given up.
        for seqs in [s for c in self.removed for s in c.files.values()] + self.deleted:
            self.exempt.update(s for s in seqs if self.deliveries[s] == 0)
        self.driver.stop(clean=clean)
        self.running = False

    @precondition(lambda self: not self.running)
    @rule()
    def start(self) -> None:
        # A container first seen at start-up: its rotations are history, not replayed.
        saved = CheckpointStore.open(self.root / "checkpoints")
        known = set(saved.horizons)
        saved.close()
        for c in self.live:
            if str(c.dir.directory) not in known:
                for path, seqs in c.files.items():
                    if path != c.dir.live:
                        self.exempt.update(s for s in seqs if self.deliveries[s] == 0)
        self.driver.start()
        self.running = True

    # ---- checking -------------------------------------------------------------------------

    def record(self) -> None:
        tailer = self.driver.tailer
        cursors = set(tailer.by_key.values()) | set(tailer.by_path.values())
        assert tailer.open_files() == sum(c.is_open for c in cursors), "descriptor count"
        for doc_id, doc in self.driver.delivered[self.seen_deliveries :]:
            seq = int(doc["message"].split()[1])
            assert seq in self.written, f"delivered a line never written: {doc}"
            first = self.ids.setdefault(seq, doc_id)
            assert first == doc_id, f"line {seq} re-sent under another id: {first} vs {doc_id}"
            self.deliveries[seq] += 1
            if self.deliveries[seq] > 1:
                assert seq in self.may_repeat, f"line {seq} delivered twice without a crash"
        self.seen_deliveries = len(self.driver.delivered)

    def note_unacknowledged_window(self) -> None:
        """Lines a kill -9 may send again: those past the offsets saved on disk."""
        self.driver.store.close()  # release the lock to read what is on disk
        saved = CheckpointStore.open(self.root / "checkpoints")
        committed = {id_prefix(k).decode(): e.offset for k, e in saved.files.items()}
        saved.close()
        for doc_id, doc in self.driver.delivered:
            prefix, offset = doc_id[:20], int(doc_id[20:], 16)
            if offset >= committed.get(prefix, 0):
                self.may_repeat.add(int(doc["message"].split()[1]))

    @precondition(lambda self: self.running)
    @rule()
    def drain_and_check(self) -> None:
        self.check_nothing_lost()

    def check_nothing_lost(self) -> None:
        self.driver.ack_held()
        self.driver.step()
        self.driver.step()  # a rotated file is closed one pass after its end
        self.record()
        missing = self.written - self.exempt - {s for s, n in self.deliveries.items() if n}
        assert not missing, f"lines never delivered: {sorted(missing)[:20]}"


TailerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SHIPPER_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_tailer_against_model = TailerMachine.TestCase
