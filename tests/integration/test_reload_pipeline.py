"""New options swapped into the running pipeline between passes (a config reload), over
real files: newly excluded files end where they are, new globs are followed, files still
included read on, and what a decoder holds is not cut."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from parsers.decoder import DecoderOptions
from parsers.multiline import BUILTIN
from shipper.pipeline import PipelineOptions
from tests.support import Driver, cri


def options(d: Driver, **tail: object) -> PipelineOptions:
    """The driver's options with `tail` changed (as a reload builds them anew)."""
    assert d.pipeline is not None
    current = d.pipeline.options
    return dataclasses.replace(current, tail=dataclasses.replace(current.tail, **tail))


def by_file(d: Driver) -> Counter[tuple[str, str]]:
    return Counter(
        (Path(doc["log"]["file"]["path"]).name, doc["message"]) for _, doc in d.delivered
    )


def write(path: Path, start: int, count: int, text: str = "line") -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(cri(i, text=f"{text} {i}") for i in range(start, start + count)))


def test_reload_excludes_a_file_follows_new_globs_and_reads_on_the_others(tmp_path):
    logs, more = tmp_path / "logs", tmp_path / "more"
    logs.mkdir()
    more.mkdir()
    keep, drop, new = logs / "keep.log", logs / "drop.log", more / "new.log"
    write(keep, 0, 100)
    write(drop, 0, 100)
    write(new, 0, 10)
    d = Driver([str(logs / "*.log")], checkpoint_dir=tmp_path / "cp")
    d.step()
    drop_cursor = next(c for c in d.tailer.cursors if c.path == str(drop))
    drop_key = drop_cursor.key

    d.pipeline.apply_options(
        options(d, paths=(str(logs / "*.log"), str(more / "*.log")), exclude=("drop*",))
    )
    write(keep, 100, 100)
    write(drop, 100, 100)
    write(new, 10, 10)
    d.step()
    d.step()

    got = by_file(d)
    assert all(n == 1 for n in got.values()), "nothing delivered twice"
    assert {m for (f, m) in got if f == "keep.log"} == {f"line {i}" for i in range(200)}
    assert {m for (f, m) in got if f == "drop.log"} == {f"line {i}" for i in range(100)}
    assert {m for (f, m) in got if f == "new.log"} == {f"line {i}" for i in range(20)}
    entry = d.store.get(drop_key)
    assert entry is not None and entry.offset == drop_cursor.offset > 0, "checkpoint kept"
    assert all(c.path != str(drop) for c in d.tailer.cursors)

    # Included again: read on from its checkpoint, nothing sent twice.
    d.pipeline.apply_options(options(d, exclude=()))
    d.step()
    d.step()
    got = by_file(d)
    assert all(n == 1 for n in got.values())
    assert {m for (f, m) in got if f == "drop.log"} == {f"line {i}" for i in range(200)}


def test_a_partial_line_held_across_a_reload_is_joined_not_cut(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "app.log"
    with open(path, "ab") as fh:
        fh.write(cri(0, text="before") + cri(1, tag="P", text="first half "))
    d = Driver([str(logs / "*.log")], checkpoint_dir=tmp_path / "cp")
    d.step()
    assert [m for (_, m) in by_file(d)] == ["before"]
    assert d.pipeline is not None
    new = dataclasses.replace(d.pipeline.options, decoder=DecoderOptions(max_event_bytes=4096))
    d.pipeline.apply_options(new)
    with open(path, "ab") as fh:
        fh.write(cri(2, text="second half") + cri(3, text="after"))
    d.step()
    assert [m for (_, m) in by_file(d)] == ["before", "first half second half", "after"]
    [ctx] = d.pipeline.files.contexts.values()
    assert ctx.decoder.options.max_event_bytes == 4096, "the file took the new options"


def test_a_multiline_event_held_across_a_reload_goes_on_under_the_new_rule(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "app.log"
    trace = ["Exception in thread main java.lang.Error: x", "\tat a.b(C.java:1)"]
    with open(path, "ab") as fh:
        fh.write(b"".join(cri(i, text=t) for i, t in enumerate(trace)))
    d = Driver(
        [str(logs / "*.log")],
        checkpoint_dir=tmp_path / "cp",
        decoder=DecoderOptions(multiline=BUILTIN["java"]),
    )
    d.step()
    assert d.delivered == [], "the trace is held, waiting for more"
    assert d.pipeline is not None
    new = dataclasses.replace(
        d.pipeline.options, decoder=DecoderOptions(multiline=BUILTIN["java"], max_event_bytes=8192)
    )
    d.pipeline.apply_options(new)
    with open(path, "ab") as fh:
        fh.write(cri(2, text="\tat d.e(F.java:2)") + cri(3, text="next event"))
    d.step()
    messages = [m for (_, m) in by_file(d)]
    assert messages == ["\n".join([*trace, "\tat d.e(F.java:2)"])]
