"""What becomes of files that left: deleted files held open past the bounds, and closed
files whose names stayed gone (found again elsewhere, or given up, counted).

Everything it decides is applied by shipper.tail.lifecycle.
"""

from __future__ import annotations

import os

from shipper.tail import naming
from shipper.tail.budget import deleted_open
from shipper.tail.catchup import find_copy
from shipper.tail.group import Group
from shipper.tail.lifecycle import Lifecycle
from shipper.tail.reader import FileCursor

UNSETTLED_LOOKS = 10  # looks a closed file that left its name waits for unreadable rotations


def check_bounds(life: Lifecycle, now: float) -> None:
    """Deleted files held open past the bounds."""
    for cursor, reason in life.budget.over(deleted_open(life.deleted), now):
        group = life.groups[cursor.scope]
        if cursor.copy and os.path.basename(cursor.copy) in group.listing:
            life.close(cursor)
            life.to_copy(group, cursor, now)
        elif not cursor.finished:
            life.end(cursor, reason, now)


def forget_gone(life: Lifecycle, groups: list[Group], now: float) -> None:
    """Closed files whose names stayed gone; checkpoints of texts the runtime deleted."""
    for group in groups:
        for key, looks in list(group.gone.items()):
            if looks < 1:
                continue  # missing from one listing only
            del group.gone[key]
            holder = life.registry.by_key.get(key)
            if holder is not None and not holder.is_open:
                if not _found_again(life, group, holder, looks, now):
                    life.end(holder, "vanished_unread", now)
            elif holder is None:
                life.registry.store.remove(key)
        life.losses.looked(group)


def _found_again(life: Lifecycle, group: Group, cursor: FileCursor, looks: int, now: float) -> bool:
    """Before a closed file whose name went is given up: its text may be under a name
    the listings could not pair with it (renamed and compressed between two looks, its
    inode number since taken by another file). While a rotation of its stream cannot be
    read yet (its compression being written), it is waited for."""
    found = find_copy(life.fs, group, cursor.fp, cursor.stream)
    if found is not None:
        life.placed(group, cursor, found[0], found[1], now)
        return True
    if looks < UNSETTLED_LOOKS and any(
        naming.stream_of(group.lives, name) == cursor.stream for name in group.unsettled
    ):
        group.gone[cursor.key] = looks
        return True
    return False
