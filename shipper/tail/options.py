"""How files are found and read (the `inputs` section of the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shipper.shares import Share

BEGINNING = "beginning"
END = "end"


@dataclass(frozen=True, slots=True)
class TailOptions:
    paths: tuple[str, ...] = ("/var/log/containers/*.log",)
    exclude: tuple[str, ...] = ()
    read_from: str = BEGINNING
    chunk_bytes: int = 256 * 1024
    max_line_bytes: int = 2 * 1024 * 1024
    max_open_files: int = 1024
    rotate_wait: float = 5.0
    deleted_max_seconds: float = 600.0
    deleted_max_files: int = 64
    rescan_interval: float = 5.0
    idle_poll_max: float = 0.5
    watch: bool = True
    share: Share = field(default_factory=Share)  # the directories this worker follows
