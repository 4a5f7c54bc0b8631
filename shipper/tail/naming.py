"""Rotation names: which files beside a live log are its rotations.

While shipper runs, rotations are followed as they happen (an open descriptor, the
inode seen under a new name, a rename event), whatever the new name. Names matter only
for files that rotated while nobody was looking (shipper stopped, or a file created and
renamed between two looks): then a file counts as a rotation of `<live>` when its name is
`<live>` followed by one of the suffixes runtimes and logrotate write, plain or `.gz`:

- kubelet and containerd: `0.log.20261201-100000` (a fraction may follow)
- numeric, counting up or shifting (logrotate, docker's `<id>-json.log.1`): `.1`, `.000017`
- logrotate `dateext`: `app.log-20261201` (with an hour, minutes, seconds: `-2026120110`)
- logrotate `dateformat`: `app.log.2026-12-01` (optionally `-10`, `T10:00`, ...)
- logrotate `dateext` with `extension .log`: `app-20261201.log`

Temporary files of a compression in progress (`.gz.tmp`, `.tmp`) are not rotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SUFFIX = re.compile(
    r"(?:\.(?P<kubelet>\d{8}-\d{6}(?:\.\d+)?)"
    r"|\.\d+"
    r"|-\d{8}(?:\d{2}){0,3}"
    r"|\.\d{4}-\d{2}-\d{2}(?:[-_T.]\d{2}(?:[:.]?\d{2}){0,2})?)"
    r"(?:\.gz)?"
)
_DATED_STEM = re.compile(r"-\d{8}(?:\d{2}){0,3}")


def is_rotation(live: str, name: str) -> bool:
    """`name` is a rotation of the live file `live` (both names within one directory)."""
    if name.startswith(live):
        return len(name) > len(live) and _SUFFIX.fullmatch(name, len(live)) is not None
    stem, dot, ext = live.rpartition(".")
    if not dot or not stem or not name.startswith(stem):
        return False
    rest = name[len(stem) :]
    if rest.endswith(".gz"):
        rest = rest[:-3]
    if not rest.endswith("." + ext):
        return False
    return _DATED_STEM.fullmatch(rest[: -len(ext) - 1]) is not None


def stream_of(lives: Iterable[str], name: str) -> str | None:
    """The live file (among `lives`) that `name` is a rotation of; the longest such name
    when several fit (`a.log.1` belongs to `a.log.1`'s stream if that is live itself)."""
    best = None
    for live in lives:
        if (best is None or len(live) > len(best)) and is_rotation(live, name):
            best = live
    return best


def kubelet_stamp(live: str, name: str) -> str | None:
    """The kubelet rotation stamp in `name` (for stores that kept a stamp horizon)."""
    if not name.startswith(live):
        return None
    m = _SUFFIX.fullmatch(name, len(live))
    return m["kubelet"] if m is not None else None
