import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.checkpoint import (
    PREVIOUS_NAME,
    STORE_NAME,
    AckTracker,
    CheckpointError,
    CheckpointStore,
)


def test_store_round_trips_through_disk(tmp_path):
    store = CheckpointStore.open(tmp_path)
    store.commit("fp|/d", 123, "/var/log/containers/a.log", 1, 2)
    store.set_horizon("/d", "20240301-000001")
    store.save()
    store.close()
    again = CheckpointStore.open(tmp_path)
    entry = again.get("fp|/d")
    assert (entry.offset, entry.path, entry.dev, entry.ino) == (
        123,
        "/var/log/containers/a.log",
        1,
        2,
    )
    assert again.horizon("/d") == "20240301-000001"
    assert not again.recovered_from_previous


def test_write_is_atomic_and_keeps_the_previous_good_copy(tmp_path):
    store = CheckpointStore.open(tmp_path)
    store.commit("k|/d", 10, "/p", 1, 1)
    store.save()
    store.commit("k|/d", 20, "/p", 1, 1)
    store.save()
    assert sorted(os.listdir(tmp_path)) == [STORE_NAME, PREVIOUS_NAME, "lock"]
    store.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # torn write
        lambda b: b.replace(b'"offset":20', b'"offset":99'),  # edited: checksum mismatch
        lambda b: b"\x00" * len(b),
        lambda b: b"",
    ],
)
def test_corrupt_store_is_recovered_from_the_previous_copy_with_a_warning(tmp_path, caplog, damage):
    store = CheckpointStore.open(tmp_path)
    store.commit("k|/d", 10, "/p", 1, 1)
    store.save()
    store.commit("k|/d", 20, "/p", 1, 1)
    store.save()
    store.close()
    current = tmp_path / STORE_NAME
    current.write_bytes(damage(current.read_bytes()))
    again = CheckpointStore.open(tmp_path)
    assert again.get("k|/d").offset == 10
    assert again.recovered_from_previous
    assert "previous" in caplog.text


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
    store.commit("old|/d1", 1, "/p1", 1, 1)
    store.commit("new|/d2", 1, "/p2", 1, 2)
    store.set_horizon("/d1", "")
    store.files["old|/d1"].seen = 0.0
    store.scopes_seen["/d1"] = 0.0
    store.touch("new|/d2", 10_000.0)
    assert store.expire(10_050.0) == ["old|/d1"]
    assert list(store.files) == ["new|/d2"]
    assert store.horizon("/d1") is None
    store.close()


def test_offsets_never_move_backwards(tmp_path):
    store = CheckpointStore()
    store.commit("k", 50, "/p", 1, 1)
    store.commit("k", 20, "/p", 1, 1)
    assert store.get("k").offset == 50


def test_tracker_commits_only_contiguous_acknowledged_segments():
    store = CheckpointStore()
    tracker = AckTracker(store)
    a = tracker.open("k", 100, 2, 10, "/p", 1, 1)
    b = tracker.open("k", 200, 1, 5, "/p", 1, 1)
    tracker.ack(b, 1, 5)
    assert store.get("k") is None
    tracker.ack(a, 1, 5)
    assert store.get("k") is None
    tracker.ack(a, 1, 5)
    assert store.get("k").offset == 200
    assert tracker.in_flight_bytes == 0
    assert tracker.idle()


def test_tracker_segment_without_documents_commits_when_its_turn_comes():
    store = CheckpointStore()
    tracker = AckTracker(store)
    a = tracker.open("k", 100, 1, 10, "/p", 1, 1)
    tracker.open("k", 150, 0, 0, "/p", 1, 1)  # e.g. lines all excluded
    assert store.get("k") is None
    tracker.ack(a, 1, 10)
    assert store.get("k").offset == 150


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=20),
    order=st.randoms(use_true_random=False),
    cut=st.integers(min_value=0, max_value=100),
)
def test_committed_offset_is_the_end_of_the_longest_acknowledged_prefix(sizes, order, cut):
    store = CheckpointStore()
    tracker = AckTracker(store)
    segments = [tracker.open("k", (i + 1) * 10, n, n, "/p", 1, 1) for i, n in enumerate(sizes)]
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
    committed = store.get("k").offset if store.get("k") else 0
    assert committed == prefix * 10
