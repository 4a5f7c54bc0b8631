import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.acks import AckTracker
from shipper.checkpoint import CheckpointError, CheckpointStore, Entry
from shipper.storefile import MARKS_NAME, PREVIOUS_NAME, STORE_NAME


def entry(path: str = "/p", scope: str = "/d") -> Entry:
    return Entry(path, 0, 1, 2, scope=scope, stream="0.log", fp="fp", real=scope + "/0.log")


def test_store_round_trips_through_disk(tmp_path):
    store = CheckpointStore.open(tmp_path)
    assert store.fresh
    store.register("fp|/d|0.log", entry("/var/log/containers/a.log"))
    store.commit("fp|/d|0.log", 123)
    store.track("fp|/d|0.log", "/d/0.log.1", 1, 3)
    store.save()
    store.close()
    again = CheckpointStore.open(tmp_path)
    e = again.get("fp|/d|0.log")
    assert (e.offset, e.path, e.dev, e.ino, e.real) == (
        123,
        "/var/log/containers/a.log",
        1,
        3,
        "/d/0.log.1",
    )
    assert (e.scope, e.stream, e.fp) == ("/d", "0.log", "fp")
    assert [k for k, _ in again.in_scope("/d")] == ["fp|/d|0.log"]
    assert not again.fresh  # the first start is over
    assert not again.recovered_from_previous


def write_version_1(directory, body: bytes) -> None:
    """A store as version 1 wrote it (header spelled out here, not by the code under test)."""
    header = b'{"format":"shipper-checkpoints","version":1,"sha256":"%s"}' % (
        hashlib.sha256(body).hexdigest().encode()
    )
    (directory / STORE_NAME).write_bytes(header + b"\n" + body + b"\n")


def test_a_store_written_before_identities_were_recorded_is_read(tmp_path):
    body = (
        b'{"files":{"abc|/d":{"dev":1,"ino":2,"offset":7,"path":"/l","seen":1.0}},'
        b'"horizons":{"/d":{"horizon":"20240301-000001","seen":1.0}}}'
    )
    write_version_1(tmp_path, body)
    store = CheckpointStore.open(tmp_path)
    e = store.get("abc|/d")
    assert (e.offset, e.scope, e.fp, e.stream) == (7, "/d", "abc", "")
    assert store.horizon("/d") == "20240301-000001"
    assert not store.fresh
    store.close()


def test_commits_to_a_forgotten_text_do_not_bring_it_back():
    store = CheckpointStore()
    store.register("k", entry())
    store.remove("k")
    store.commit("k", 10)
    assert store.get("k") is None and store.in_scope("/d") == []


def test_write_is_atomic_and_keeps_the_previous_good_copy(tmp_path):
    store = CheckpointStore.open(tmp_path)
    store.register("k|/d", entry())
    store.commit("k|/d", 10)
    store.save()
    store.commit("k|/d", 20)
    store.save()
    assert sorted(os.listdir(tmp_path)) == [STORE_NAME, PREVIOUS_NAME, "lock", MARKS_NAME]
    store.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # torn write
        lambda b: b.replace(b",20,", b",99,"),  # edited: checksum mismatch
        lambda b: b"\x00" * len(b),
        lambda b: b"",
    ],
)
def test_corrupt_store_is_recovered_from_the_previous_copy_with_a_warning(tmp_path, caplog, damage):
    store = CheckpointStore.open(tmp_path)
    store.register("k|/d", entry())
    store.commit("k|/d", 10)
    store.save()
    store.commit("k|/d", 20)
    store.save()
    store.close()
    current = tmp_path / STORE_NAME
    current.write_bytes(damage(current.read_bytes()))
    again = CheckpointStore.open(tmp_path)
    assert again.get("k|/d").offset == 10
    assert again.recovered_from_previous
    assert "previous" in caplog.text


texts = st.text(st.sampled_from("ab/|.-0"), max_size=8)


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["", "/d", "/d/e", "/x|y"]),  # scope
            st.sampled_from(["0.log", "", "c-json.log", "0.log|z"]),  # stream
            st.sampled_from(["fp", "", "0123456789abcdef"]),  # fingerprint
            st.one_of(st.none(), texts),  # None: the key as file_key makes it; else its tail
            st.one_of(texts, st.just("0.log.1.gz")),  # real: a name in the scope, or any
            st.booleans(),  # real under the scope
            st.sampled_from(["/var/log/containers/a.log", "", "/p"]),  # path
            st.integers(0, 2**40),
        ),
        max_size=12,
    )
)
def test_every_entry_round_trips_through_the_compact_format(tmp_path_factory, rows):
    directory = tmp_path_factory.mktemp("cp")
    store = CheckpointStore.open(directory)
    want = {}
    for scope, stream, fp, tail, real, under, path, offset in rows:
        key = f"{fp}|{scope}|{stream}" + ("" if tail is None else "|" + tail)
        if tail is not None and len(tail) % 2:
            key = tail  # a key of some other form (older stores: `fp|scope`)
        where = f"{scope}/{real}" if under else real
        e = Entry(path, offset, 7, offset // 3, 123.0, scope, stream, fp, where)
        store.files[key] = e
        want[key] = (path, offset, 7, offset // 3, 123.0, scope, stream, fp, where)
    store.save()
    store.close()
    again = CheckpointStore.open(directory)
    got = {
        k: (e.path, e.offset, e.dev, e.ino, e.seen, e.scope, e.stream, e.fp, e.real)
        for k, e in again.files.items()
    }
    again.close()
    assert got == want


def test_a_store_written_by_version_1_with_its_marks_inside_is_read(tmp_path):
    body = (
        b'{"files":{"fp|/d|0.log":{"dev":1,"ino":2,"offset":7,"path":"/l","seen":1.0,'
        b'"scope":"/d","stream":"0.log","fp":"fp","real":"/d/0.log.1"}},'
        b'"horizons":{},"since":5.0,"sent":{"fp|/d|0.log":90}}'
    )
    write_version_1(tmp_path, body)
    store = CheckpointStore.open(tmp_path)
    e = store.get("fp|/d|0.log")
    assert (e.offset, e.real, store.since) == (7, "/d/0.log.1", 5.0)
    assert store.resent("fp|/d|0.log", 89) and not store.resent("fp|/d|0.log", 90)
    store.save()  # written again as version 2, the mark in its own file
    store.close()
    assert b'"version":2' in (tmp_path / STORE_NAME).read_bytes()
    again = CheckpointStore.open(tmp_path)
    assert again.resent("fp|/d|0.log", 89) and again.get("fp|/d|0.log").offset == 7
    again.close()


def test_store_of_a_newer_format_version_is_refused_with_a_way_out(tmp_path):
    (tmp_path / STORE_NAME).write_bytes(
        b'{"format":"shipper-checkpoints","version":99,"sha256":"x"}\n{}\n'
    )
    with pytest.raises(CheckpointError, match=r"format version 99.*move the directory away"):
        CheckpointStore.open(tmp_path)


def test_store_that_cannot_be_recovered_starts_empty_and_says_so(tmp_path, caplog):
    (tmp_path / STORE_NAME).write_bytes(b"garbage")
    store = CheckpointStore.open(tmp_path)
    assert store.files == {}
    assert "starting without checkpoints" in caplog.text


def test_second_process_on_the_same_directory_is_refused(tmp_path):
    first = CheckpointStore.open(tmp_path)
    with pytest.raises(CheckpointError, match="in use by another shipper process"):
        CheckpointStore.open(tmp_path)
    first.close()
    CheckpointStore.open(tmp_path).close()


def test_entries_of_files_gone_long_enough_are_dropped(tmp_path):
    store = CheckpointStore.open(tmp_path, forget_after=100)
    store.register("old|/d1", entry(scope="/d1"))
    store.register("new|/d2", entry(scope="/d2"))
    store.horizons["/d1"] = ""
    store.files["old|/d1"].seen = 0.0
    store.scopes_seen["/d1"] = 0.0
    store.touch("new|/d2", 10_000.0)
    assert store.expire(10_050.0) == ["old|/d1"]
    assert list(store.files) == ["new|/d2"]
    assert store.in_scope("/d1") == []
    assert store.horizon("/d1") is None
    store.close()


def test_offsets_never_move_backwards(tmp_path):
    store = CheckpointStore()
    store.register("k", entry())
    store.commit("k", 50)
    store.commit("k", 20)
    assert store.get("k").offset == 50


def test_tracker_commits_only_contiguous_acknowledged_segments():
    store = CheckpointStore()
    store.register("k", entry())
    tracker = AckTracker(store)
    a = tracker.open("k", 100, 2, 10)
    b = tracker.open("k", 200, 1, 5)
    tracker.ack(b, 1, 5)
    assert store.get("k").offset == 0
    tracker.ack(a, 1, 5)
    assert store.get("k").offset == 0
    tracker.ack(a, 1, 5)
    assert store.get("k").offset == 200
    assert tracker.in_flight_bytes == 0
    assert tracker.idle()


def test_tracker_segment_without_documents_commits_when_its_turn_comes():
    store = CheckpointStore()
    store.register("k", entry())
    tracker = AckTracker(store)
    a = tracker.open("k", 100, 1, 10)
    tracker.open("k", 150, 0, 0)  # e.g. lines all excluded
    assert store.get("k").offset == 0
    tracker.ack(a, 1, 10)
    assert store.get("k").offset == 150


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=20),
    order=st.randoms(use_true_random=False),
    cut=st.integers(min_value=0, max_value=100),
)
def test_committed_offset_is_the_end_of_the_longest_acknowledged_prefix(sizes, order, cut):
    store = CheckpointStore()
    store.register("k", entry())
    tracker = AckTracker(store)
    segments = [tracker.open("k", (i + 1) * 10, n, n) for i, n in enumerate(sizes)]
    acks = [(i, seg) for i, seg in enumerate(segments) for _ in range(seg.remaining)]
    order.shuffle(acks)
    done = acks[: cut * len(acks) // 100]
    for _, seg in done:
        tracker.ack(seg, 1, 1)
    left = [0] * len(sizes)
    for i, _ in acks[len(done) :]:
        left[i] += 1
    prefix = 0
    while prefix < len(sizes) and left[prefix] == 0:
        prefix += 1
    assert store.get("k").offset == prefix * 10
