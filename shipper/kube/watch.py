"""List-then-watch of one resource in a thread, feeding events to the event loop.

One LIST (served from the apiserver's watch cache with resourceVersion=0), then one
long WATCH from its resourceVersion with bookmarks, resumed from the last version seen
when the server closes it. Only a 410 Gone (the version is too old) costs a new LIST.
Failures back off exponentially with jitter up to 30 s, so neither a 403 nor an outage
turns into a request storm; the log says what is wrong once in a while, not per retry.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shipper.kube.api import KubeApi, Response

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]  # ("LIST", {"items": [...]}) or ("ADDED", obj), ...


class Gone(Exception):
    """The resourceVersion is too old: list again."""


@dataclass
class WatchStats:
    lists: int = 0
    watches: int = 0
    relists_after_gone: int = 0
    errors: int = 0
    connected: bool = False


class ResourceWatch:
    """Keeps one resource (pods of a node, or namespaces) flowing into `emit`."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        emit: Callable[[list[Event]], None],
        field_selector: str = "",
        name: str = "pods",
        watch_timeout: int = 300,
    ) -> None:
        self.api = api
        self.path = path
        self.emit = emit
        self.field_selector = field_selector
        self.name = name
        self.watch_timeout = watch_timeout
        self.stats = WatchStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)
        self._response: Response | None = None
        self._last_warning = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.signal_stop()
        self.join()

    def signal_stop(self) -> None:
        """Ask the thread to end and break a watch it is blocked reading.

        The socket is shut down rather than the response closed: closing waits for the
        reading thread to let go of the connection, which a quiet watch may not do for a
        minute; a shutdown makes its read return at once.
        """
        self._stop.set()
        response = self._response
        if response is None:
            return
        sock = response.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
                backoff = 0.5
            except Gone:
                self.stats.relists_after_gone += 1
                log.info("watch expired (410 Gone); listing again", extra={"resource": self.name})
                version = ""
            except Exception as exc:  # any failure: back off and try again
                if self._stop.is_set():
                    return
                if getattr(exc, "status", None) == 410:
                    self.stats.relists_after_gone += 1
                    version = ""
                    continue
                self.stats.errors += 1
                self.stats.connected = False
                self._warn(exc)
                self._stop.wait(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, 30.0)

    def _get(self, query: dict[str, Any], read_timeout: float) -> Response:
        """A streamed response; raises ApiStatus (with `.status`) unless 2xx."""
        return self.api.get(self.path, query, read_timeout)

    def _list(self) -> str:
        response = self._get(
            {"fieldSelector": self.field_selector, "resourceVersion": "0"}, read_timeout=60
        )
        try:
            body = orjson.loads(response.read())
        finally:
            response.close()
        self.stats.lists += 1
        self.stats.connected = True
        self.emit([("LIST", body)])
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, version: str) -> str:
        response = self._get(
            {
                "watch": "true",
                "fieldSelector": self.field_selector,
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(self.watch_timeout + random.randint(0, 60)),
            },
            read_timeout=self.watch_timeout + 120,
        )
        self._response = response
        self.stats.watches += 1
        self.stats.connected = True
        buffer = b""
        try:
            for data in response.stream(64 * 1024):
                if self._stop.is_set():
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                events = []
                for line in lines:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise Gone()
                        raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if kind != "BOOKMARK":
                        events.append((kind, obj))
                if events:
                    self.emit(events)
        finally:
            self._response = None
            response.close()
        return version

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < 30:
            return
        self._last_warning = now
        status = getattr(exc, "status", None)
        if status == 410:
            return
        hint = ""
        if status in (401, 403):
            hint = " (RBAC: shipper needs get, list and watch on pods and namespaces)"
        log.warning(
            f"kubernetes API unavailable for {self.name}; records keep flowing with file-name "
            f"metadata{hint}",
            extra={"resource": self.name, "error": _describe(exc)},
        )


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{exc.__class__.__name__}: {str(exc)[:200]}"
