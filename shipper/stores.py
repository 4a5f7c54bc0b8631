"""Checkpoint stores of several workers, kept in step with the number of workers.

With one worker, the store is `checkpoint.path` itself; with `workers: N`, worker `i` has
its own store in `checkpoint.path/worker-<i>` and the root store holds nothing but the
lock that keeps a second shipper out. Whenever shipper starts with another number of
workers than last time, the entries (offsets, "sent up to" marks, identities, rotation
horizons) are moved to the store of the worker that now owns their directory
(shipper.shares), so no file is read again from its start and none is skipped.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from shipper.checkpoint import CheckpointStore
from shipper.shares import Share, drop_plan

log = logging.getLogger(__name__)

WORKER_DIR = "worker-{}"


def worker_dir(root: Path, worker: int) -> Path:
    return root / WORKER_DIR.format(worker)


def _worker_dirs(root: Path) -> dict[int, Path]:
    found = {}
    for path in root.glob("worker-*"):
        suffix = path.name.removeprefix("worker-")
        if path.is_dir() and suffix.isdigit():
            found[int(suffix)] = path
    return found


def _move(src: CheckpointStore, dst: CheckpointStore, keys: list[str]) -> None:
    """Move the entries `keys` (and their scopes' horizons) from `src` to `dst`."""
    for key in keys:
        entry = src.files[key]
        dst.files[key] = entry
        dst.by_scope.setdefault(entry.scope, set()).add(key)
        mark = src.sent.get(key)
        if mark is not None:
            dst.sent[key] = max(mark, dst.sent.get(key, 0))
        src.remove(key)
    dst.dirty = True


def _same_start(stores: list[CheckpointStore]) -> None:
    """Every store dates from the first start of any of them: a worker store that is new
    only because the number of workers changed is not a first start on this node (whose
    rotations would be taken for history)."""
    since = [s.since for s in stores if s.since]
    if since:
        for store in stores:
            if store.since != min(since):
                store.since, store.dirty = min(since), True


def _move_scopes(src: CheckpointStore, dst: CheckpointStore, scopes: list[str]) -> None:
    for scope in scopes:
        dst.horizons[scope] = src.horizons.pop(scope)
        seen = src.scopes_seen.pop(scope, None)
        if seen is not None:
            dst.scopes_seen[scope] = seen
    if scopes:
        src.dirty = dst.dirty = True


def absorb_workers(root: CheckpointStore) -> None:
    """One worker now: take the entries of every worker store into the root store (which
    the caller holds open, and so locked) and remove the worker stores."""
    assert root.directory is not None
    moved = 0
    for _, path in sorted(_worker_dirs(root.directory).items()):
        store = CheckpointStore.open(path)
        try:
            moved += len(store.files)
            _move(store, root, list(store.files))
            _move_scopes(store, root, list(store.horizons))
            _same_start([root, store])
        finally:
            store.close()
        root.save()
        shutil.rmtree(path)
    drop_plan(root.directory)
    if moved:
        log.info("checkpoints of the workers taken into one store", extra={"entries": moved})


def distribute(root: CheckpointStore, workers: int, plan: Mapping[str, int] | None = None) -> None:
    """`workers` now: give each worker store the entries of the directories it owns (by
    `plan`, shipper.shares), from the root store (held open by the caller) and from the
    stores of any other number of workers or plan before. Worker stores are written
    first, the root store emptied last, so an interruption leaves every entry in at least
    one store (the next start moves it)."""
    assert root.directory is not None and workers > 1
    owner = Share(0, workers, plan or {}).owner
    existing = _worker_dirs(root.directory)
    stores = {
        i: CheckpointStore.open(worker_dir(root.directory, i))
        for i in sorted(set(existing) | set(range(workers)))
    }
    try:
        moved = 0
        for source in [root, *stores.values()]:
            by_worker: dict[int, list[str]] = {}
            for key, entry in source.files.items():
                by_worker.setdefault(owner(entry.scope), []).append(key)
            for i, keys in by_worker.items():
                if stores[i] is not source:
                    moved += len(keys)
                    _move(source, stores[i], keys)
            for scope in list(source.horizons):
                target = stores[owner(scope)]
                if target is not source:
                    _move_scopes(source, target, [scope])
        _same_start([root, *stores.values()])
        for i, store in stores.items():
            if store.dirty or i >= workers:
                store.save()
        if root.dirty:
            root.save()
    finally:
        for store in stores.values():
            store.close()
    for i in existing:
        if i >= workers:
            shutil.rmtree(existing[i])  # emptied above
    if moved:
        log.info(
            "checkpoints moved to the workers that own their files now",
            extra={"entries": moved, "workers": workers},
        )
