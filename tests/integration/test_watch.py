"""Directory watching on the real kernel: one inotify instance for any number of
directories, structural events only, recursive trees that grow."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from shipper.tail import inotify
from shipper.tail.changes import Changes, Drained
from shipper.tail.portable_watch import Watcher
from tests.support import wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux inotify")


def test_inotify_is_found_on_linux() -> None:
    """Not a reason to skip: on Linux the C library's inotify calls must be found (the
    daemon would fall back to slower directory polling)."""
    assert inotify.available()


class Seen(Changes):
    """Collects what the watcher reports, and counts its wake-ups."""

    def __init__(self) -> None:
        super().__init__(self._woken)
        self.count = 0
        self.got = Drained()

    def _woken(self) -> None:
        self.count += 1

    def collect(self) -> Drained:
        batch = self.drain()
        self.got.dirs |= batch.dirs
        self.got.moves += batch.moves
        self.got.overflow |= batch.overflow
        return self.got


def inotify_instances() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if _target(fd) == "anon_inode:inotify")


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture
def watcher():  # type: ignore[no-untyped-def]
    seen = Seen()
    w = inotify.InotifyWatcher(seen)
    w.start()
    w.seen = seen  # type: ignore[attr-defined]
    yield w
    w.stop()


def events_after(w: inotify.InotifyWatcher, marker: Path, before: int) -> int:
    """Events counted once the marker's creation has arrived (events come in order)."""
    marker.touch()
    wait_for(lambda: w.events > before, 10, "the marker's event")
    return w.events - before


def test_appearing_moving_and_vanishing_files_notify_writes_do_not(tmp_path, watcher):
    w = watcher
    w.watch(str(tmp_path))
    (tmp_path / "0.log").write_bytes(b"x\n")  # create
    wait_for(lambda: w.seen.count >= 1, 10, "a notification")
    assert w.seen.collect().dirs == {str(tmp_path)}
    os.rename(tmp_path / "0.log", tmp_path / "0.log.1")
    wait_for(lambda: w.events >= 3, 10, "the rename")  # both halves
    move = (str(tmp_path), "0.log", str(tmp_path), "0.log.1")
    assert wait_for(lambda: w.seen.collect().moves == [move], 10, "the rename reported")
    before = w.events
    with open(tmp_path / "0.log.1", "ab") as fh:
        for _ in range(50):
            fh.write(b"more\n")
            fh.flush()
    assert events_after(w, tmp_path / "marker", before) == 1  # the marker only
    (tmp_path / "0.log.1").unlink()
    wait_for(lambda: w.events >= before + 2, 10, "the deletion")


def test_hundreds_of_directories_share_one_instance_and_one_thread(tmp_path, watcher):
    w = watcher
    instances, threads = inotify_instances(), threading.active_count()
    dirs = [tmp_path / f"pod-{i}" / "app" for i in range(300)]
    for d in dirs:
        d.mkdir(parents=True)
        w.watch(str(d))
    assert inotify_instances() == instances
    assert threading.active_count() == threads
    assert len(w.watched()) == 300
    before = w.events
    (dirs[-1] / "0.log").touch()
    wait_for(lambda: w.events > before, 10, "an event from the last directory")


def test_a_recursive_watch_follows_directories_created_later(tmp_path, watcher):
    w = watcher
    w.watch(str(tmp_path), recursive=True)
    deep = tmp_path / "ns_pod_uid" / "app"
    deep.mkdir(parents=True)
    wait_for(lambda: any(p.endswith("app") for p in w._dirs.values()), 10, "the new subtree")
    before = w.events
    (deep / "0.log").touch()
    wait_for(lambda: w.events > before, 10, "an event two levels down")


def test_unwatch_stops_events_but_a_shared_directory_stays_watched(tmp_path, watcher):
    w = watcher
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    w.watch(str(tmp_path), recursive=True)  # covers a and b
    w.watch(str(a))  # a second watch on a
    w.watch(str(b))
    w.unwatch(str(a))
    before = w.events
    (a / "still.log").touch()  # the recursive watch still covers a
    wait_for(lambda: w.events > before, 10, "an event in a")
    w.unwatch(str(tmp_path), recursive=True)
    before = w.events
    (a / "gone.log").touch()  # nobody watches a any more
    assert events_after(w, b / "marker", before) == 1  # b's marker only


def test_watchdog_fallback_reports_directories_and_renames_too(tmp_path):
    seen = Seen()
    w = Watcher(seen)
    w.start()
    try:
        w.watch(str(tmp_path))
        (tmp_path / "0.log").touch()
        wait_for(lambda: seen.count >= 1, 10, "a notification through watchdog")
        os.rename(tmp_path / "0.log", tmp_path / "0.log.1")
        move = (str(tmp_path), "0.log", str(tmp_path), "0.log.1")
        wait_for(lambda: move in seen.collect().moves, 10, "the rename through watchdog")
        assert str(tmp_path) in seen.got.dirs
    finally:
        w.stop()
