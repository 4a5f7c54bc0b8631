"""Which worker owns a file: a share by the directory its text is written in.

With `workers: N`, each worker process follows the files of the directories it owns, so
a container's live file and all its rotations stay with one worker, and its checkpoints
and document ids with them. The supervisor plans the shares when it starts: the
directories the globs reach then, each to one worker, balanced by their bytes on disk
(largest first, each to the least loaded), written to `shares.json` in the checkpoint
directory before any worker starts, and fixed for as long as the supervisor runs (a
restarted worker reads the same plan). A directory the plan does not name (a pod that
came later) goes by a stable hash. The next start plans again and moves the checkpoint
entries of any directory whose owner changed (shipper.stores.distribute).

Balance matters for a backlog: with hashing alone, 50 pods of unequal sizes split 64/36
between two workers in one benchmark tree, and the larger share decides when it is done.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from shipper.checkpoint import CheckpointError
from shipper.storefile import write_durably

log = logging.getLogger(__name__)

PLAN_FILE = "shares.json"


def share_of(scope: str, workers: int) -> int:
    """The worker (0 to workers-1) a directory the plan does not name goes to."""
    if workers <= 1:
        return 0
    digest = hashlib.blake2b(scope.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


@dataclass(frozen=True, slots=True)
class Share:
    """One process's part: worker `mine` of `workers`, by `plan` (directory → worker)."""

    mine: int = 0
    workers: int = 1
    plan: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)

    def owner(self, scope: str) -> int:
        planned = self.plan.get(scope)
        if planned is not None and 0 <= planned < self.workers:
            return planned
        return share_of(scope, self.workers)

    def owns(self, scope: str) -> bool:
        return self.workers <= 1 or self.owner(scope) == self.mine


def plan_shares(sizes: Mapping[str, int], workers: int) -> dict[str, int]:
    """Each directory to a worker, balanced by bytes: the largest first, each to the
    worker with the fewest bytes so far, then the fewest directories (empty files at a
    start are spread too), then the lowest index, so the same sizes give the same plan."""
    loads = [(0, 0)] * max(workers, 1)  # (bytes, directories) of each worker
    plan: dict[str, int] = {}
    for scope, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        worker = min(range(len(loads)), key=lambda w: (loads[w], w))
        plan[scope] = worker
        loads[worker] = (loads[worker][0] + size, loads[worker][1] + 1)
    return plan


def write_plan(root: Path, workers: int, plan: Mapping[str, int]) -> None:
    body = orjson.dumps({"workers": workers, "plan": plan}, option=orjson.OPT_SORT_KEYS)
    write_durably(root, PLAN_FILE, [body])


def read_plan(root: Path, workers: int) -> dict[str, int]:
    """The supervisor's plan for `workers` (empty when there is none: hashing alone). A
    plan that cannot be read is an error: workers that disagree on owners would read a
    directory twice or not at all."""
    path = root / PLAN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = orjson.loads(raw)
        plan = data["plan"]
        if not isinstance(plan, dict) or not all(isinstance(w, int) for w in plan.values()):
            raise TypeError("plan is not a map of directories to workers")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); remove it and restart") from None
    if data.get("workers") != workers:
        log.warning(
            "the shares plan is for another number of workers; directories go by hash",
            extra={"path": str(path), "planned_for": data.get("workers"), "workers": workers},
        )
        return {}
    return plan


def drop_plan(root: Path) -> None:
    """One worker again: no plan."""
    (root / PLAN_FILE).unlink(missing_ok=True)
