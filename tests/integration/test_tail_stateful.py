"""The tailer as a state machine on real files, checked against a model of its own.

Random interleavings of appends; rotations under every naming scheme shipper must follow
(kubelet stamps, numeric suffixes counting up, docker's shifting `.1`, logrotate's dated
`-YYYYMMDD` and `.YYYY-MM-DD`); gzip compression of older rotations with the plain copy
removed; deletion of the oldest rotation followed at once by a rotation (the kubelet's
order, in which the new live file takes the inode number just freed); copy-truncate;
container removals; files with identical first lines in one directory; reads with and
without acknowledgements (without them the byte budget fills and reading pauses for many
steps while rotations go on); checkpoint saves; restarts, clean or abandoned (kill -9).

The model decides by itself which lines must come out. Every pass of the reader looks
at every directory, and every file it sees is opened then, so a file that existed at a
look of a running reader stays readable through its descriptor until that reader stops,
whatever happens to its name. A line may be missing only if every file holding it (the
file, or a compressed or copy-truncate copy of it) is gone: deleted with no running
reader holding it, or held by a reader that stopped since; or if it sat in a rotation
lying beside a live file when the very first reader on this node started (history).
A line delivered twice always carries the same document id (Elasticsearch keeps one),
and is delivered twice only if it was in the unacknowledged window of an abandoned
reader.
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

SCHEMES = ["kubelet", "numeric", "shifting", "dateext", "dateformat"]
HEADER = b"2024-03-01T09:00:00Z stdout F same first line\n"


class MFile:
    """A file in the model: the lines it holds, whether it is on disk, whether the
    running reader holds it open."""

    def __init__(self, seqs: list[int] | None = None, history: bool = False) -> None:
        self.seqs = list(seqs or [])
        self.on_disk = True
        self.held = False
        self.history = history

    def readable(self) -> bool:
        return (self.on_disk or self.held) and not self.history


class Container:
    """One container's log directory, rotated under one naming scheme."""

    def __init__(self, root: Path, name: str, scheme: str) -> None:
        self.dir = KubeletDir(root, pod=name)
        self.scheme = scheme
        self.live = self.dir.live
        self.files: dict[Path, MFile] = {self.live: MFile()}
        self.rotated: list[Path] = []  # oldest first
        self.n = 0

    def _name(self) -> str:
        n = self.n
        return {
            "kubelet": f"0.log.20240301-{n:06d}",
            "numeric": f"0.log.{n:06d}",
            "shifting": "0.log.1",
            "dateext": f"0.log-{20240300 + n}",
            "dateformat": f"0.log.2024-03-{n:02d}",
        }[self.scheme]

    def _rename(self, old: Path, new: Path) -> None:
        os.rename(old, new)
        self.files[new] = self.files.pop(old)
        self.rotated[self.rotated.index(old)] = new

    def _shift(self) -> None:
        """.K -> .K+1, the oldest (highest K) first so that no name is overwritten."""
        for old in list(self.rotated):
            k, gz = old.name[len("0.log.") :].partition(".gz")[:2]
            self._rename(old, old.with_name(f"0.log.{int(k) + 1}{gz}"))

    def rotate(self) -> MFile:
        self.n += 1
        if self.scheme == "shifting":
            self._shift()
        target = self.live.with_name(self._name())
        os.rename(self.live, target)
        self.files[target] = self.files.pop(self.live)
        self.rotated.append(target)
        self.live.touch()
        self.files[self.live] = MFile()
        return self.files[target]

    def compress_older(self, newest: bool = False) -> None:
        """gzip every plain rotation but the newest (or that too), removing the plain copy."""
        for path in [p for p in self.rotated[: None if newest else -1] if p.suffix != ".gz"]:
            plain = self.files.pop(path)
            gz = gzip_file(path)
            self.files[gz] = MFile(plain.seqs, plain.history)
            self.rotated[self.rotated.index(path)] = gz
            plain.on_disk = False

    def delete_oldest(self) -> MFile | None:
        if not self.rotated:
            return None
        path = self.rotated.pop(0)
        path.unlink()
        gone = self.files.pop(path)
        gone.on_disk = False
        return gone

    def copy_truncate(self) -> None:
        self.n += 1
        copy = self.live.with_name(self._name() if self.scheme != "shifting" else "0.log.1")
        if self.scheme == "shifting":
            self._shift()
        shutil.copyfile(self.live, copy)
        os.truncate(self.live, 0)
        live = self.files[self.live]
        self.files[copy] = MFile(live.seqs)
        self.rotated.append(copy)
        live.seqs = []  # truncation destroys the text, also for a reader holding it

    def remove(self) -> None:
        for f in self.files.values():
            f.on_disk = False
        self.dir.remove()


class TailerMachine(RuleBasedStateMachine):
    containers = Bundle("containers")
    deletes = True  # the world deletes files and truncates them
    tail: dict[str, int] = {"deleted_max_files": 10_000}

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="shipper-model-"))
        (self.root / "flat").mkdir()
        self.seq = itertools.count()
        self.names = itertools.count()
        self.written: set[int] = set()
        self.ids: dict[int, str] = {}
        self.deliveries: dict[int, int] = defaultdict(int)
        self.headers: dict[str, set[str]] = defaultdict(set)  # flat file -> header ids
        self.may_repeat: set[int] = set()
        self.seen_deliveries = 0
        self.live: list[Container] = []
        self.flat: dict[Path, MFile] = {}
        self.all_files: list[MFile] = []  # every file ever made, for the loss rule
        self.ever_saved = False
        self.driver = Driver(
            [str(self.root / "containers" / "*.log"), str(self.root / "flat" / "*.log")],
            checkpoint_dir=self.root / "checkpoints",
            read_bytes=8192,
            buffer_max_bytes=8192,  # unacknowledged reads soon pause reading
            tail={"chunk_bytes": 4096, **self.tail},
        )
        self.running = True

    def teardown(self) -> None:
        try:
            if not self.running:
                self.start()
            self.check_nothing_lost()
        finally:
            self.driver.stop(clean=False)
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- the world ------------------------------------------------------------------------

    def _track(self, c: Container) -> None:
        for f in c.files.values():
            if f not in self.all_files:
                self.all_files.append(f)

    @initialize(target=containers, scheme=st.sampled_from(SCHEMES))
    def first_container(self, scheme: str) -> Container:
        return self.new_container(scheme)

    @rule(target=containers, scheme=st.sampled_from(SCHEMES))
    def new_container(self, scheme: str) -> Container:
        c = Container(self.root, f"pod-{next(self.names)}", scheme)
        self.live.append(c)
        self._track(c)
        return c

    @rule(c=containers, n=st.integers(1, 40), stream=st.sampled_from(["stdout", "stderr"]))
    def append(self, c: Container, n: int, stream: str) -> None:
        if c not in self.live:
            return
        seqs = [next(self.seq) for _ in range(n)]
        c.dir.write(b"".join(cri(s, stream) for s in seqs))
        c.files[c.live].seqs.extend(seqs)
        self.written.update(seqs)

    @rule(c=containers, compress=st.sampled_from(["no", "older", "all"]))
    def rotate(self, c: Container, compress: str) -> None:
        """Rotated; the older rotations compressed, or all of them (the file just rotated
        too: renamed, compressed and its plain copy removed before the reader looks)."""
        if c in self.live:
            c.rotate()
            if compress != "no":
                c.compress_older(newest=compress == "all")
            self._track(c)

    @precondition(lambda self: self.deletes)
    @rule(c=containers)
    def delete_oldest_then_rotate(self, c: Container) -> None:
        """The kubelet's order: the oldest rotation removed, then the live file rotated;
        the new live file then usually takes the inode number just freed."""
        if c in self.live and c.delete_oldest() is not None:
            c.rotate()
            c.compress_older()
            self._track(c)

    @precondition(lambda self: self.deletes)
    @rule(c=containers)
    def copy_truncate(self, c: Container) -> None:
        if c in self.live and c.files[c.live].seqs:
            c.copy_truncate()
            self._track(c)

    @precondition(lambda self: self.deletes)
    @rule(c=containers)
    def delete_oldest_rotation(self, c: Container) -> None:
        if c in self.live:
            c.delete_oldest()

    @precondition(lambda self: self.deletes)
    @rule(c=consumes(containers))
    def remove(self, c: Container) -> None:
        if c in self.live:
            c.remove()
            self.live.remove(c)

    @rule(n=st.integers(2, 4), lines=st.integers(0, 5))
    def flat_files_with_one_first_line(self, n: int, lines: int) -> None:
        """Files copied into one directory (`shipper tail --pods` post-mortem), several
        beginning with the same line: each is a file of its own."""
        for _ in range(n):
            path = self.root / "flat" / f"copy-{next(self.names)}.log"
            seqs = [next(self.seq) for _ in range(lines)]
            path.write_bytes(HEADER + b"".join(cri(s) for s in seqs))
            self.flat[path] = f = MFile(seqs)
            self.all_files.append(f)
            self.written.update(seqs)

    # ---- the reader -----------------------------------------------------------------------

    def _look(self) -> None:
        """A reader pass looks at every directory and opens what it finds."""
        for f in self.all_files:
            if f.on_disk:
                f.held = True

    @precondition(lambda self: self.running)
    @rule(ack=st.booleans(), passes=st.integers(1, 30))
    def read(self, ack: bool, passes: int) -> None:
        self._look()
        self.driver.step(ack=ack, max_passes=passes)
        self.record()

    @precondition(lambda self: self.running)
    @rule(c=containers, rounds=st.integers(2, 8), compress=st.sampled_from(["older", "all"]))
    def paused_while_rotating(self, c: Container, rounds: int, compress: str) -> None:
        """The sink stops acknowledging: reading pauses on the full budget while the
        runtime writes and rotates (compressing, removing plain copies) for many passes."""
        for _ in range(rounds):
            if c not in self.live:
                break
            self.append(c, 20, "stdout")
            self.rotate(c, compress=compress)
            self._look()
            self.driver.step(ack=False, max_passes=3)
            self.record()

    @precondition(lambda self: self.running)
    @rule()
    def acknowledge_held(self) -> None:
        self.driver.ack_held()

    @precondition(lambda self: self.running)
    @rule()
    def save(self) -> None:
        self.driver.save()
        self.ever_saved = True

    @precondition(lambda self: self.running)
    @rule(clean=st.booleans())
    def stop(self, clean: bool) -> None:
        if not clean:
            self.note_unacknowledged_window()
        self.driver.stop(clean=clean)
        self.ever_saved = self.ever_saved or clean
        for f in self.all_files:
            f.held = False  # descriptors die with the process
        self.running = False

    @precondition(lambda self: not self.running)
    @rule()
    def start(self) -> None:
        if not self.ever_saved:
            # The very first start on this node: rotations beside live files are history.
            for c in self.live:
                for path, f in c.files.items():
                    if path != c.live:
                        f.history = True
        self.driver.start()
        self.running = True

    # ---- checking -------------------------------------------------------------------------

    def record(self) -> None:
        tailer = self.driver.tailer
        assert tailer.open_files() == sum(c.is_open for c in tailer.lifecycle.cursors)
        for doc_id, doc in self.driver.delivered[self.seen_deliveries :]:
            if doc["message"] == "same first line":
                self.headers[doc["log"]["file"]["path"]].add(doc_id)
                continue
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
            if offset >= committed.get(prefix, 0) and doc["message"] != "same first line":
                self.may_repeat.add(int(doc["message"].split()[1]))

    @precondition(lambda self: self.running)
    @rule()
    def drain_and_check(self) -> None:
        self.check_nothing_lost()

    def check_nothing_lost(self) -> None:
        self.driver.ack_held()
        # Time passes until three rounds in a row bring nothing (a rotated file is closed
        # one pass after its end; at the descriptor cap, files wait their turn).
        quiet = 0
        for _ in range(200):
            self._look()
            quiet = 0 if self.driver.step() else quiet + 1
            if quiet == 3:
                break
            self.driver.now += 1.0
        self.record()
        readable = {s for f in self.all_files if f.readable() for s in f.seqs}
        delivered = {s for s, n in self.deliveries.items() if n}
        missing = (self.written & readable) - delivered
        assert not missing, f"lines never delivered: {sorted(missing)[:20]}"
        if not self.deletes:  # every text is on disk: nothing can have been given up
            assert self.driver.tailer.stats.given_up_bytes == {}
        flat_paths = {str(p) for p, f in self.flat.items() if f.readable()}
        assert flat_paths <= set(self.headers), "a file beginning like another was skipped"
        ids = [i for p in flat_paths for i in self.headers[p]]
        assert len(ids) == len(set(ids)), "two files with one first line share document ids"


TailerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SHIPPER_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_tailer_against_model = TailerMachine.TestCase


class CappedTailerMachine(TailerMachine):
    """Two descriptors for all the files: most are found with no room to open them, and
    wait closed (unidentified while empty) while they are renamed and compressed. The
    world deletes nothing here (rotations are renamed and compressed only, so every text
    stays on disk), so every line must come out and nothing may be counted given up."""

    deletes = False
    tail = {"deleted_max_files": 10_000, "max_open_files": 2}


CappedTailerMachine.TestCase.settings = TailerMachine.TestCase.settings
test_capped_tailer_against_model = CappedTailerMachine.TestCase
