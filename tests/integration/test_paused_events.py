"""An event held for its continuation (a long line in pieces, a stack trace) is not cut
by its timeout while the continuation is on disk unread (reading paused, a backlog)."""

from __future__ import annotations

from tests.support import Driver, KubeletDir, cri, write_lines


def test_a_long_line_in_pieces_stays_whole_while_reading_is_paused(tmp_path):
    busy = KubeletDir(tmp_path, pod="busy")
    write_lines(busy, 0, 5_000)  # its documents fill the budget: reading pauses
    long = KubeletDir(tmp_path, pod="long")
    pieces = [cri(0, tag="P", text=chr(97 + i) * 16_000) for i in range(20)]
    long.write(b"".join(pieces) + cri(0, tag="F", text="end") + cri(1))
    d = Driver(
        [str(tmp_path / "containers" / "*.log")],
        checkpoint_dir=tmp_path / "cp",
        read_bytes=32 * 1024,
        buffer_max_bytes=65536,
        tail={"chunk_bytes": 16 * 1024},
    )
    d.step(ack=False)  # reads until the budget is spent: part of the long line is held
    for _ in range(6):  # 60 s of a sink that does not answer: far past partial_timeout
        d.now += 10
        d.step(ack=False)
    longs = [doc for _, doc in d.delivered if doc["kubernetes"]["pod"]["name"] == "long"]
    assert longs == []  # nothing cut while the rest waits unread on disk
    d.ack_held()
    d.step()  # the sink answers again: everything is read and delivered
    longs = [doc for _, doc in d.delivered if doc["kubernetes"]["pod"]["name"] == "long"]
    assert [doc["message"][-3:] for doc in longs] == ["end", "e 1"]
    assert longs[0]["message"] == "".join(chr(97 + i) * 16_000 for i in range(20)) + "end"
    assert "flags" not in longs[0]["log"]
