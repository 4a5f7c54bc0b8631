"""The tailer against real files: rename, gzip, truncate, unlink, symlinks, descriptor caps."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from shipper.tail.fs import FileSystem
from tests.support import Driver, KubeletDir, cri, gzip_file


def lines(start: int, count: int) -> bytes:
    return b"".join(cri(i) for i in range(start, start + count))


def expected(start: int, count: int) -> list[str]:
    return [f"line {i}" for i in range(start, start + count)]


def driver(tmp_path: Path, **kw) -> Driver:  # type: ignore[no-untyped-def]
    return Driver([str(tmp_path / "containers" / "*.log")], checkpoint_dir=tmp_path / "cp", **kw)


def test_rename_rotation_reads_old_file_to_end_then_new_from_start(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 10))
    d.step()
    # The runtime writes more to the old file just before and after the rename.
    k.write(lines(10, 5))
    rotated = k.rotate()
    with open(rotated, "ab") as fh:
        fh.write(lines(15, 3))
    k.write(lines(18, 7))
    d.step()
    d.step()
    assert d.messages() == expected(0, 25)
    paths = {doc["log"]["file"]["path"] for _, doc in d.delivered}
    assert paths == {str(k.link)}
    assert d.tailer.stats.rotations == 1


def test_a_file_rotated_before_its_first_line_was_seen_complete_loses_nothing(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path, tail={"rescan_interval": 3600.0})
    d.step()  # 0.log is empty: matched, waiting for a first line to identify it by
    k.write(lines(0, 5))
    k.rotate(compress_older=False)  # ...rotated before anyone looked again
    k.write(lines(5, 5))
    d.step()  # the pending file is looked at again; no rescan is due
    d.now += 3600
    d.step()
    d.step()
    assert sorted(d.messages(), key=lambda m: int(m.split()[1])) == expected(0, 10)


def test_an_empty_live_file_replaced_before_its_first_line_is_noticed_without_a_rescan(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path, tail={"rescan_interval": 3600.0})
    d.step()  # 0.log is empty: followed, waiting for a first line to identify it by
    k.rotate(compress_older=False)  # nothing written yet, the runtime rotates anyway
    k.write(lines(0, 3))
    rescans = d.tailer.rescans
    for _ in range(3):
        d.now += 1
        d.step()
    assert d.messages() == expected(0, 3)
    assert d.tailer.rescans == rescans  # no periodic rescan was needed
    assert [c.real for c in d.tailer.cursors] == [str(k.live)]  # the empty rotation ended


class StatHook(FileSystem):
    """A filesystem that runs `hook` the first time `path` is looked up by stat."""

    def __init__(self, path: Path, hook) -> None:  # type: ignore[no-untyped-def]
        self.path, self.hook = str(path), hook

    def stat(self, path: str) -> os.stat_result:
        if path == self.path and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().stat(path)


def test_a_rotated_file_is_closed_once_the_runtime_writes_to_the_new_one(tmp_path):
    k = KubeletDir(tmp_path)
    fs = StatHook(k.live, None)
    d = driver(tmp_path, tail={"rotate_wait": 3600.0}, fs=fs)
    k.write(lines(0, 5))
    d.step()
    rotated = k.rotate(compress_older=False)
    d.step()  # read to its end; the runtime has not reopened yet: kept open
    assert [c.is_open for c in d.tailer.cursors if c.real == str(rotated)] == [True]

    def runtime_between_end_and_check() -> None:
        # Between the read that found the end and the look at the new file: the last
        # lines reach the old file, then the runtime reopens and writes to the new one.
        with open(rotated, "ab") as fh:
            fh.write(lines(5, 3))
        k.write(lines(8, 2))

    fs.hook = runtime_between_end_and_check
    d.step()
    d.step()
    assert fs.hook is None  # the new file was looked at
    # The late lines were not cut off (the two files are read in turn, oldest first).
    assert d.messages() == expected(0, 10)
    assert [c.real for c in d.tailer.cursors] == [str(k.live)]  # closed long before 3600 s
    assert d.now < 1100


def test_a_compressed_rotation_is_closed_at_its_end(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path, tail={"rotate_wait": 3600.0})
    k.write(lines(0, 1))
    d.step()
    d.stop()
    for i in range(3):
        k.write(lines(1 + 5 * i, 5))
        k.rotate()  # .000001 and .000002 are compressed
    d.start()
    d.step()
    d.step()
    assert sorted(d.messages(), key=lambda m: int(m.split()[1])) == expected(0, 16)
    # Only the plain .000003 may still be written to (the new 0.log is empty): kept open.
    assert [os.path.basename(c.real) for c in d.tailer.cursors] == ["0.log.20240301-000003"]


def test_checkpoints_of_deleted_rotations_are_forgotten(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 5))
    d.step()
    for i in range(3):
        k.rotate()
        k.write(lines(5 + 5 * i, 5))
        d.step()
    live = {c.key for c in d.tailer.cursors}
    assert len(live) == 1 and len(d.store.files) == 4  # the live file and 3 rotations
    oldest = sorted(k.directory.glob("0.log.*"))[:2]
    for path in oldest:
        path.unlink()  # the kubelet keeps a few rotations and deletes the oldest
    d.step()
    d.step()
    assert len(d.store.files) == 2  # the live file and the rotation still there
    for path in k.directory.glob("0.log.*"):
        path.unlink()
    d.step()
    d.step()
    assert set(d.store.files) == live
    d.restart()
    d.step()
    assert d.messages() == expected(0, 20)  # nothing read twice


class BlindListing(FileSystem):
    """A filesystem whose next listing of `directory` misses names starting with `prefix`
    (readdir while a compressed copy is renamed in and the plain one removed may show
    neither)."""

    def __init__(self) -> None:
        self.directory, self.prefix = "", ""

    def listdir(self, directory: str) -> dict[str, int] | None:
        names = super().listdir(directory)
        if names is not None and directory == self.directory:
            self.directory = ""
            return {n: i for n, i in names.items() if not n.startswith(self.prefix)}
        return names


def test_a_listing_that_misses_a_rotation_being_compressed_keeps_its_checkpoint(tmp_path):
    k = KubeletDir(tmp_path)
    fs = BlindListing()
    d = driver(tmp_path, fs=fs)
    k.write(lines(0, 5))
    d.step()
    plain = k.rotate(compress_older=False)
    k.write(lines(5, 5))
    d.step()
    d.step()
    fs.directory, fs.prefix = str(k.directory), plain.name
    gzip_file(plain)
    d.tailer.rescan(d.now)  # sees neither name
    d.tailer.rescan(d.now)  # sees the .gz
    d.tailer.rescan(d.now)
    assert len(d.store.files) == 2  # the rotation's checkpoint is still there
    d.restart()
    d.step()
    assert d.messages() == expected(0, 10)  # and nothing is read twice after a restart


class CountingHeads(FileSystem):
    def __init__(self) -> None:
        self.heads: list[str] = []

    def read_head(self, path: str, compressed: bool) -> bytes:
        self.heads.append(path)
        return super().read_head(path, compressed)


def test_a_directory_of_many_rotations_costs_a_listing_not_a_look_at_each(tmp_path):
    k = KubeletDir(tmp_path)
    fs = CountingHeads()
    d = driver(tmp_path, fs=fs)
    k.write(lines(0, 1))
    d.step()
    for i in range(300):
        k.rotate()
        k.write(lines(1 + i, 1))
    d.step()
    assert len(d.messages()) == 301
    fs.heads.clear()
    for _ in range(5):
        d.tailer.rescan(d.now)
    assert fs.heads == []  # nothing new: no first line read again
    k.rotate()
    d.tailer.rescan(d.now)
    assert len(fs.heads) <= 1  # at most the compressed copy of the last rotation, checked


class CompressAfterHead(FileSystem):
    """Compresses `plain` right after its first line was read (the runtime finishing the
    compression just then)."""

    def __init__(self, plain: Path) -> None:
        self.plain = plain

    def read_head(self, path: str, compressed: bool) -> bytes:
        head = super().read_head(path, compressed)
        if path == str(self.plain) and self.plain.exists():
            gzip_file(self.plain)
        return head


def test_a_rotation_compressed_while_it_is_looked_at_is_still_read(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 1))
    d.step()
    d.stop()
    k.write(lines(1, 5))
    plain = k.rotate(compress_older=False)  # 0.log.20240301-000001, not seen yet
    k.write(lines(6, 5))
    d.fs = CompressAfterHead(plain)
    d.start()
    d.step()
    d.step()
    assert sorted(d.messages(), key=lambda m: int(m.split()[1])) == expected(0, 11)


def test_rotations_never_opened_are_read_in_order_including_gzipped(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 5))
    d.step()
    d.stop()  # shipper is down while the runtime rotates three times
    k.write(lines(5, 5))
    k.rotate()
    k.write(lines(10, 5))
    k.rotate()
    k.write(lines(15, 5))
    k.rotate()
    k.write(lines(20, 5))
    assert sorted(p.name for p in k.directory.iterdir()) == [
        "0.log",
        "0.log.20240301-000001.gz",
        "0.log.20240301-000002.gz",
        "0.log.20240301-000003",
    ]
    d.start()
    d.step()
    assert sorted(d.messages(), key=lambda m: int(m.split()[1])) == expected(0, 25)
    assert len(d.messages()) == 25
    assert d.tailer.stats.rotations == 3  # found beside the live file, all counted


def test_restart_resumes_inside_a_compressed_rotation_at_the_committed_offset(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 100))
    d.step()
    k.write(lines(100, 50))
    d.stop()
    k.rotate()  # 0.log (150 lines, 100 delivered) -> .000001
    k.write(lines(150, 20))
    k.rotate()  # -> .000002, and .000001 is gzip-compressed, its plain copy deleted
    assert (k.directory / "0.log.20240301-000001.gz").exists()
    assert not (k.directory / "0.log.20240301-000001").exists()
    d.start()
    d.step()
    assert d.messages() == expected(0, 170)  # nothing twice: resumed at line 100


def test_committed_offset_survives_restart_without_resending(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 30))
    d.step()
    d.restart()
    k.write(lines(30, 10))
    d.step()
    assert d.messages() == expected(0, 40)


def test_crash_before_acknowledgement_resends_with_the_same_ids(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 20))
    d.step()
    d.save()
    k.write(lines(20, 20))
    d.step(ack=False)  # sent, never acknowledged: kill -9
    first_ids = {doc["message"]: i for i, doc in d.delivered}
    d.restart(clean=False)
    d.step()
    assert Counter(d.messages()) == Counter(expected(0, 20) + expected(20, 20) * 2)
    for doc_id, doc in d.delivered:
        assert first_ids[doc["message"]] == doc_id  # Elasticsearch answers 409: no duplicate


def test_copy_truncate_restarts_at_zero_and_is_counted(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 10))
    d = Driver([str(log)], checkpoint_dir=tmp_path / "cp")
    d.step()
    os.truncate(log, 0)
    d.step()
    log.write_bytes(lines(10, 3))
    d.step()
    assert d.messages() == expected(0, 13)
    assert d.tailer.stats.truncations == 1
    ids = [i for i, _ in d.delivered]
    assert len(set(ids)) == 13  # new text, new ids: not mistaken for the old lines


def test_copy_truncate_with_a_copy_beside_it_loses_nothing(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 10))
    d.step()
    k.write(lines(10, 10))  # not read yet when the copy is made and the file truncated
    copy = k.directory / "0.log.20240301-000001"
    copy.write_bytes(k.live.read_bytes())
    os.truncate(k.live, 0)
    k.write(lines(20, 5))  # the new text is shorter than what had been read
    d.step()
    d.step()
    assert Counter(d.messages()) == Counter(expected(0, 25))


def test_rewrite_in_place_past_the_read_position_is_noticed(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 2))
    d = Driver([str(log)], checkpoint_dir=tmp_path / "cp")
    d.step()
    with open(log, "r+b") as fh:  # same inode, new first line, longer than before
        fh.truncate(0)
        fh.write(lines(100, 6))
    d.step()
    assert d.messages() == expected(0, 2) + expected(100, 6)


def test_deleted_file_is_read_to_its_end_through_the_open_descriptor(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path, read_bytes=4096, tail={"chunk_bytes": 4096})
    k.write(lines(0, 10))
    d.step()
    k.write(lines(10, 2000))
    d.step(max_passes=1)  # only part of it is read
    k.remove()
    d.step()
    assert d.messages() == expected(0, 2010)
    assert d.tailer.cursors == []  # closed once read
    assert d.tailer.stats.given_up_bytes == {}


def test_deleted_files_beyond_the_limit_are_given_up_counted_and_logged(tmp_path, caplog):
    dirs = [KubeletDir(tmp_path, pod=f"p{i}") for i in range(3)]
    d = driver(tmp_path, tail={"deleted_max_files": 1}, buffer_max_bytes=65536)
    for k in dirs:
        k.write(lines(0, 5))
    d.step()
    for k in dirs:
        k.write(lines(5, 3000))
    d.step(ack=False, max_passes=3)  # budget spent: reading stalls
    for k in dirs:
        k.remove()
    d.tailer.rescan(d.now + 1)
    # What each file still held: its size less the end of the last line handed out.
    size = len(lines(0, 5) + lines(5, 3000))
    read_end = Counter()
    for _, doc in d.delivered:
        pod = doc["kubernetes"]["pod"]["name"]
        end = doc["log"]["offset"] + len(cri(int(doc["message"].split()[1])))
        read_end[pod] = max(read_end[pod], end)
    unread = {pod: size - read_end[pod] for pod in ("p0", "p1", "p2")}
    logged = {
        r.file: r.bytes_given_up for r in caplog.records if r.getMessage().startswith("giving up")
    }
    assert d.tailer.stats.given_up_files["deleted_file_limit"] == 2
    assert len(logged) == 2 and all(n > 0 for n in logged.values())
    assert sorted(logged.values()) == sorted(
        unread[p] for p in unread if any(f"/ns_{p}_" in f for f in logged)
    )
    assert d.tailer.stats.given_up_bytes["deleted_file_limit"] == sum(logged.values())


def test_deleted_files_over_the_limit_are_read_first_if_they_can_be(tmp_path, caplog):
    dirs = [KubeletDir(tmp_path, pod=f"p{i}") for i in range(3)]
    d = driver(tmp_path, tail={"deleted_max_files": 1, "rotate_wait": 10.0})
    for k in dirs:
        k.write(lines(0, 5))
    d.step()
    for k in dirs:
        k.write(lines(5, 300))
        k.remove()  # deleted with 300 unread lines each, 2 over the limit
    d.tailer.rescan(d.now + 1)  # within rotate_wait: not given up yet
    d.step()
    assert d.tailer.stats.given_up_bytes == {}
    assert sorted(d.messages()) == sorted(expected(0, 305) * 3)
    assert "giving up" not in caplog.text


def test_renamed_file_keeps_its_identity_and_is_not_read_again(tmp_path):
    a = tmp_path / "a.log"
    a.write_bytes(lines(0, 5))
    d = Driver([str(tmp_path / "*.log")], checkpoint_dir=tmp_path / "cp")
    d.step()
    os.rename(a, tmp_path / "b.log")
    with open(tmp_path / "b.log", "ab") as fh:
        fh.write(lines(5, 2))
    d.step()
    d.step()
    assert d.messages() == expected(0, 7)


def test_new_file_on_a_reused_path_is_a_new_file(tmp_path):
    a = tmp_path / "a.log"
    a.write_bytes(lines(0, 5))
    d = Driver([str(a)], checkpoint_dir=tmp_path / "cp")
    d.step()
    d.stop()
    a.unlink()
    a.write_bytes(lines(50, 7))  # longer than the old committed offset, other first line
    d.start()
    d.step()
    assert d.messages() == expected(0, 5) + expected(50, 7)


def test_symlinks_are_followed_and_excludes_skip_files(tmp_path):
    k = KubeletDir(tmp_path, pod="keep")
    skip = KubeletDir(tmp_path, pod="skip-me")
    k.write(lines(0, 3))
    skip.write(lines(100, 3))
    d = driver(tmp_path, tail={"exclude": ("skip-me_*",)})
    d.step()
    assert d.messages() == expected(0, 3)
    doc = d.delivered[0][1]
    assert doc["kubernetes"]["pod"]["name"] == "keep"
    assert doc["kubernetes"]["pod"]["uid"] == "uid-keep"


def test_open_descriptors_stay_within_the_cap_and_every_line_arrives(tmp_path):
    dirs = [KubeletDir(tmp_path, pod=f"p{i:03d}") for i in range(60)]
    for i, k in enumerate(dirs):
        k.write(lines(i * 1000, 3))
    d = driver(tmp_path, tail={"max_open_files": 8})
    peak = 0
    for round_ in range(4):
        d.step(max_passes=1)
        for _ in range(20):
            d.step(max_passes=1)
            peak = max(peak, d.tailer.open_files())
        for i, k in enumerate(dirs):
            k.write(lines(i * 1000 + 3 + round_, 1))
        d.tailer.rescan(d.now)
    d.step()
    assert peak <= 8
    want = [f"line {i * 1000 + j}" for i in range(60) for j in range(7)]
    assert Counter(d.messages()) == Counter(want)


def test_read_from_end_skips_existing_lines_of_files_seen_at_start(tmp_path):
    k = KubeletDir(tmp_path)
    k.write(lines(0, 10) + b"2024-03-01T10:00:00Z stdout F incomplete")
    d = driver(tmp_path, tail={"read_from": "end"})
    d.step()
    k.write(b" line\n" + lines(10, 2))
    d.step()
    assert d.messages() == ["incomplete line", *expected(10, 2)]


def test_files_appearing_later_are_read_from_the_start_even_with_read_from_end(tmp_path):
    d = driver(tmp_path, tail={"read_from": "end"})
    d.step()
    k = KubeletDir(tmp_path)
    k.write(lines(0, 4))
    d.step()
    assert d.messages() == expected(0, 4)


def test_one_busy_file_does_not_starve_the_others(tmp_path):
    busy = KubeletDir(tmp_path, pod="busy")
    quiet = KubeletDir(tmp_path, pod="quiet")
    busy.write(lines(0, 50_000))
    quiet.write(lines(900_000, 1))
    d = driver(tmp_path, read_bytes=512 * 1024, tail={"chunk_bytes": 64 * 1024})
    d.step(max_passes=1)
    assert "line 900000" in d.messages()
    assert len(d.messages()) < 50_000


def test_over_long_line_ships_its_head_flagged_and_counts_the_rest(tmp_path):
    log = tmp_path / "app.log"
    head = b"2024-03-01T10:00:00Z stdout F "
    log.write_bytes(lines(0, 1) + head + b"x" * 300_000 + b"\n" + lines(1, 1))
    d = Driver(
        [str(log)],
        checkpoint_dir=tmp_path / "cp",
        tail={"max_line_bytes": 10_000, "chunk_bytes": 8192},
    )
    d.step()
    msgs = d.messages()
    assert msgs[0] == "line 0" and msgs[2] == "line 1"
    long_doc = d.delivered[1][1]
    assert "truncated" in long_doc["log"]["flags"]
    assert long_doc["message"] == "x" * (10_000 - len(head))
    assert long_doc["log"]["offset"] == len(cri(0))


def test_unterminated_last_line_of_a_rotated_file_is_still_shipped(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 2) + b"2024-03-01T10:00:00Z stdout F cut short")
    d.step()
    k.rotate()
    d.step()
    d.step()
    assert d.messages() == [*expected(0, 2), "cut short"]


def test_gzip_rotation_found_at_start_is_read_when_newer_than_the_horizon(tmp_path):
    k = KubeletDir(tmp_path)
    k.write(lines(0, 3))
    old = k.rotate()
    gzip_file(old)  # history from before shipper: not replayed
    k.write(lines(3, 3))
    d = driver(tmp_path)
    d.step()
    assert d.messages() == expected(3, 3)


def test_numbered_rotations_while_reading_is_paused_are_all_read_in_order(tmp_path):
    k = KubeletDir(tmp_path, naming="numeric")
    d = driver(tmp_path, buffer_max_bytes=65536)
    k.write(lines(0, 10))
    d.step(ack=False)
    for i in range(30):  # the sink is down: nothing acknowledged, reading pauses
        k.write(lines(10 + i * 100, 100))
        k.rotate()  # 0.log -> 0.log.0000NN, older ones compressed, their plain copy removed
        d.step(ack=False, max_passes=2)
    assert any(p.name.endswith(".gz") for p in k.directory.iterdir())
    d.ack_held()
    d.step()
    d.step()
    assert Counter(d.messages()) == Counter(expected(0, 3010))
    assert d.tailer.stats.given_up_bytes == {}
    # Read in order: each rotation's lines before the next one's.
    seqs = [int(m.split()[1]) for m in d.messages()]
    assert seqs == sorted(seqs)


def test_files_beginning_with_the_same_line_in_one_directory_are_each_read(tmp_path):
    same = cri(0, text="same first line")
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.log").write_bytes(same + lines(ord(name) * 100, 3))
    (tmp_path / "d.log").write_bytes(lines(1, 2))
    d = Driver([str(tmp_path / "*.log")], checkpoint_dir=tmp_path / "cp")
    d.step()
    by_file = {}
    for doc_id, doc in d.delivered:
        by_file.setdefault(doc["log"]["file"]["path"], []).append((doc_id, doc["message"]))
    assert sorted(by_file) == [str(tmp_path / f"{n}.log") for n in "abcd"]
    for name in "abc":
        got = [m for _, m in by_file[str(tmp_path / f"{name}.log")]]
        assert got == ["same first line", *expected(ord(name) * 100, 3)]
    ids = [i for docs in by_file.values() for i, _ in docs]
    assert len(ids) == len(set(ids))  # three files, three sets of ids
    d.restart()
    for name in "abc":
        with open(tmp_path / f"{name}.log", "ab") as fh:
            fh.write(lines(ord(name) * 100 + 3, 1))
    d.step()
    assert sorted(d.messages()[-3:]) == sorted(f"line {ord(n) * 100 + 3}" for n in "abc")


def test_a_new_live_file_on_the_inode_of_the_rotation_just_deleted_is_a_new_file(tmp_path):
    k = KubeletDir(tmp_path)
    d = driver(tmp_path)
    k.write(lines(0, 5))
    first = k.rotate(compress_older=False)
    k.write(lines(5, 5))
    d.step()
    d.step()
    reused = first.stat().st_ino
    first.unlink()  # the kubelet removes the oldest rotation, then rotates
    k.rotate(compress_older=False)
    assert k.live.stat().st_ino == reused  # ext4 and xfs hand the number out again
    k.write(lines(10, 5))
    d.step()
    d.step()
    assert d.messages() == expected(0, 15)


def rotate_and_compress_at_once(k: KubeletDir) -> Path:
    """0.log renamed, compressed, its plain copy removed, a new 0.log: all between two
    looks of the tailer."""
    rotated = k.rotate(compress_older=False)
    return gzip_file(rotated)


def at_the_cap(tmp_path: Path, fs: FileSystem | None = None) -> tuple[KubeletDir, Driver]:
    """A driver with one descriptor, held by a busy container's file (lines 0-4), and a
    buffer so small that reading pauses while acknowledgements are held."""
    busy = KubeletDir(tmp_path, pod="busy")
    busy.write(lines(0, 5))
    d = driver(tmp_path, tail={"max_open_files": 1}, buffer_max_bytes=4096, fs=fs or FileSystem())
    d.step(ack=False, max_passes=3)
    return busy, d


def looks(d: Driver, count: int) -> None:
    """`count` looks at the directories, acknowledgements held."""
    for _ in range(count):
        d.now += 2
        d.step(ack=False, max_passes=3)


def drain(d: Driver, rounds: int = 3) -> None:
    """Acknowledge what was held, then read and deliver until nothing is left."""
    d.ack_held()
    for _ in range(rounds):
        d.now += 10
        d.step()


def identified_at_the_cap(tmp_path: Path, d: Driver) -> KubeletDir:
    """A quiet container's file with three lines (100-102), found and identified by name
    while the cap leaves it no descriptor."""
    quiet = KubeletDir(tmp_path, pod="quiet")
    quiet.write(lines(100, 3))
    looks(d, 1)
    return quiet


def test_a_file_never_opened_for_the_descriptor_cap_and_compressed_away_is_read_not_given_up(
    tmp_path,
):
    busy, d = at_the_cap(tmp_path)
    quiet = KubeletDir(tmp_path, pod="quiet", naming="numeric")
    quiet.write(b"2026-12-01T10:00:00.000000000Z stdout F line 100")  # no newline yet
    d.step(ack=False, max_passes=3)  # found, not opened (no room), not identifiable yet
    for i in range(3):
        quiet.write(b"\n" if i == 0 else b"")
        quiet.write(lines(101 + i * 10, 10 - (i == 0)))
        busy.write(lines(10 + i * 10, 10))
        rotate_and_compress_at_once(quiet)
        d.step(ack=False, max_passes=3)
    quiet.write(lines(200, 3))
    drain(d, rounds=5)
    want = expected(0, 5) + expected(10, 30) + ["line 100"] + expected(101, 9)
    want += expected(111, 10) + expected(121, 10) + expected(200, 3)
    assert Counter(d.messages()) == Counter(want)
    assert d.tailer.stats.given_up_bytes == {}


@pytest.mark.parametrize("inode", ["new", "reused"])
def test_a_file_never_opened_for_the_descriptor_cap_and_deleted_is_given_up_counted(
    tmp_path, caplog, inode
):
    busy, d = at_the_cap(tmp_path)
    quiet = KubeletDir(tmp_path, pod="quiet", naming="numeric")
    partial = b"2026-12-01T10:00:00.000000000Z stdout F line 100"  # no newline yet
    quiet.write(partial)
    d.step(ack=False, max_passes=3)  # found, not opened (no room), not identifiable yet
    # deleted for good, nothing of it anywhere, a new empty 0.log in its place (on the
    # inode number it freed, as ext4 and xfs hand it out again, or on another)
    if inode == "reused":
        quiet.live.unlink()
        quiet.live.touch()
    else:
        quiet.live.with_name("next").touch()
        os.rename(quiet.live.with_name("next"), quiet.live)
    rotate_and_compress_at_once(busy)  # another stream's unknown rotation accounts for nothing
    looks(d, 3)
    d.ack_held()
    quiet.write(lines(101, 2))
    d.now += 2
    d.step()
    assert d.tailer.stats.given_up_bytes == {"deleted_before_first_line": len(partial)}
    [warning] = [r for r in caplog.records if getattr(r, "bytes_given_up", None)]
    assert warning.bytes_given_up == len(partial) and "quiet" in warning.file
    assert Counter(d.messages()) == Counter(expected(0, 5) + expected(101, 2))


class UnreadableCopies(FileSystem):
    """A filesystem on which a compressed file's head reads as empty the first `times`
    times (a copy still being written, on a loaded disk)."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.reads: Counter[str] = Counter()

    def read_head(self, path: str, compressed: bool) -> bytes:
        if compressed:
            self.reads[path] += 1
            if self.reads[path] <= self.times:
                return b""
        return super().read_head(path, compressed)


def test_a_closed_file_compressed_away_waits_for_its_copy_to_be_readable_not_given_up(tmp_path):
    fs = UnreadableCopies(times=3)
    _, d = at_the_cap(tmp_path, fs)
    quiet = identified_at_the_cap(tmp_path, d)
    quiet.write(lines(103, 4))
    copy = rotate_and_compress_at_once(quiet)
    looks(d, 5)  # its copy unreadable for three of them
    assert fs.reads[str(copy)] > fs.times  # it was read once it could be
    drain(d)
    assert Counter(d.messages()) == Counter(expected(0, 5) + expected(100, 7))
    assert d.tailer.stats.given_up_bytes == {}


def test_a_closed_file_copied_under_another_rotation_name_then_deleted_is_read_from_the_copy(
    tmp_path,
):
    # A tool that moves a rotation by copying it and removing the original (as `mv` does
    # across filesystems), one look apart, while the file waits closed at the cap.
    _, d = at_the_cap(tmp_path)
    quiet = identified_at_the_cap(tmp_path, d)
    quiet.write(lines(103, 4))
    rotated = quiet.rotate(compress_older=False)
    looks(d, 1)  # followed to its new name, still closed
    shutil.copyfile(rotated, rotated.with_name("0.log.20991231-235959"))
    looks(d, 1)  # the copy: another file holding the same text
    rotated.unlink()
    looks(d, 3)
    drain(d)
    assert Counter(d.messages()) == Counter(expected(0, 5) + expected(100, 7))
    assert d.tailer.stats.given_up_bytes == {}
