"""What the uncertain range costs: a restart with `mib` MiB in flight, into a real Elasticsearch.

A tree of 250-byte CRI lines is shipped once (`shipper run --once`); then every file's
committed offset is moved back (to a line start) so that `mib` MiB lie between it and the
"sent up to" mark, as after a SIGKILL with that much in flight; and shipper runs again:

- *lookup*: the marks kept: every re-read document is looked up in the whole data stream
  (one refresh and one `ids` search per bulk request) and found, nothing is written;
- *409 only*: the marks removed (what shipper did before them): the documents are sent
  blind and answered 409 by the backing index that holds them, which is only right while
  no rollover happened in between;
- the same two into a data stream that holds none of them: the lookup finds nothing and
  everything is written (the cost when the mark is ahead of what really arrived).

CPU is shipper's (user + system); wall is the whole run, start-up included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from bench import loadgen
from shipper.checkpoint import CheckpointStore


def measure(
    work: Path, es_url: str, run_once: Any, config: Any, mib: int = 16, lines: int = 200_000
) -> dict[str, Any]:
    root = work / "tree-uncertain"
    tree = loadgen.cri_tree(root, lines)
    cfg = config(work, [str(root / "var/log/containers/*.log")], es_url, tree["pods_file"])
    run_once(cfg)  # the first delivery: everything indexed, committed, marked sent
    checkpoint = Path(yaml.safe_load(cfg.read_text())["checkpoint"]["path"])
    rows = {}
    cases = (
        ("lookup, all found", True, False),
        ("409 only", False, False),
        # a data stream that holds none of them: what the lookup costs when it finds nothing
        ("lookup, none found", True, True),
        ("no lookup, none there", False, True),
    )
    for label, keep_marks, fresh_stream in cases:
        resent = rewind(checkpoint, mib << 20, keep_marks)
        if fresh_stream:
            data = yaml.safe_load(cfg.read_text())
            data["elasticsearch"]["data_stream"] = f"logs-bench{time.monotonic_ns()}-default"
            cfg.write_text(yaml.safe_dump(data))
        cpu, wall, _rss = run_once(cfg)
        rows[label] = {"resent_mib": resent / (1 << 20), "cpu_s": cpu, "wall_s": wall}
    return {"mib": mib, "lines": tree["records"], "rows": rows}


def rewind(directory: Path, total: int, keep_marks: bool) -> int:
    """Move committed offsets back by `total` bytes in all (to line starts); the bytes."""
    store = CheckpointStore.open(directory)
    try:
        entries = [(k, e) for k, e in store.files.items() if e.offset > 0]
        share = total // max(len(entries), 1)
        moved = 0
        for key, entry in entries:
            with open(entry.path, "rb") as fh:
                start = max(entry.offset - share, 0)
                fh.seek(start)
                head = fh.read(entry.offset - start)
            cut = head.find(b"\n") + 1 if start else 0  # the first line start after `start`
            moved += entry.offset - (start + cut)
            store.sent[key] = max(store.sent.get(key, 0), entry.offset)
            entry.offset = start + cut
        if not keep_marks:
            store.sent.clear()
        store.save()
    finally:
        store.close()
    return moved
