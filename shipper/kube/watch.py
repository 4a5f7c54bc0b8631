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
from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]  # ("LIST", {"items": [...]}) or ("ADDED", obj), ...


class Gone(Exception):
    """The resourceVersion is too old: list again."""


class ApiStatus(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, detail: bytes) -> None:
        super().__init__(f"HTTP {status}: {detail.decode(errors='replace')}")
        self.status = status
        self.reason = detail.decode(errors="replace")[:120]


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
        api: ApiClient,
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
        self._response: Any = None
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
        connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
        sock = getattr(connection, "sock", None)
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

    def _get(self, query: dict[str, Any], read_timeout: float) -> Any:
        """A raw, unread (streamable) response; raises with `.status` unless 2xx."""
        params = [(k, v) for k, v in query.items() if v not in ("", None)]
        api = self.api
        headers = {"Accept": "application/json"}
        timeout = (10, read_timeout)
        if hasattr(api, "param_serialize"):  # kubernetes client 35+ (new generator)
            method, url, headers, body, post = api.param_serialize(
                method="GET",
                resource_path=self.path,
                query_params=params,
                header_params=headers,
                auth_settings=["BearerToken"],
            )
            raw = api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                post_params=post,
                _request_timeout=timeout,
            ).response
        else:
            raw = api.call_api(
                self.path,
                "GET",
                query_params=params,
                header_params=headers,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            raw = raw[0] if isinstance(raw, tuple) else raw
        if not 200 <= raw.status < 300:
            detail = raw.data[:300]
            raw.release_conn()
            raise ApiStatus(raw.status, detail)
        return raw

    def _list(self) -> str:
        response = self._get(
            {"fieldSelector": self.field_selector, "resourceVersion": "0"}, read_timeout=60
        )
        body = orjson.loads(response.data)
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
            for data in response.stream(64 * 1024, decode_content=True):
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
            response.release_conn()
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
