"""Which worker owns a file: a stable share by the directory its text is written in.

With `workers: N`, each worker process follows the files of the directories whose hash
falls to it, so a container's live file and all its rotations stay with one worker, and
its checkpoints and document ids with them. The hash is stable across restarts and
machines (not Python's `hash`).
"""

from __future__ import annotations

import hashlib


def share_of(scope: str, workers: int) -> int:
    """The worker (0 to workers-1) that owns the directory `scope`."""
    if workers <= 1:
        return 0
    digest = hashlib.blake2b(scope.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers
