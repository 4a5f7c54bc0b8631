"""Configuration reload without restart: on SIGHUP, and when the config file (or a
credential file it names) gets new content.

The new file is loaded and checked by the same `validate()` as `check-config` and `run`;
a config it refuses is logged with the key at fault and the running one stays. A valid
one is turned into the pipeline's options by the same code as at start
(`shipper.app.pipeline_options`) and handed to `Pipeline.reconfigure`, which swaps them
in between two passes: every checkpoint, held event, batch and unacknowledged document
stays. A few keys are fixed for the process (below); a change to them is logged as
needing a restart and the running value is kept. One log line says which keys changed,
by name only.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from shipper.config import Config, ConfigError, parse_config, validate
from shipper.config.watch import ContentWatch
from shipper.observe import Metrics

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between looks at the watched files

# Keys fixed for the process, kept at their running value until a restart: where the
# checkpoints and the metrics endpoint live, the process layout, how files are noticed,
# the pod watch, and where documents go (the templates installed at start cover those
# targets, and changing ids or targets mid-stream would break exactly-once).
RESTART_KEYS = (
    "workers",
    "checkpoint.path",
    "checkpoint.forget_after",
    "metrics.listen",
    "inputs.watch",
    "logging.format",
    "kubernetes",
    "routing",
    "elasticsearch.data_stream",
    "elasticsearch.index",
    "elasticsearch.dead_letter_index",
    "elasticsearch.deterministic_ids",
    "elasticsearch.install_template",
    "elasticsearch.ilm_policy",
)

# Files whose content a reload reads again (credentials and TLS material, by key).
CREDENTIAL_FILES = (
    "elasticsearch.password_file",
    "elasticsearch.api_key_file",
    "elasticsearch.tls.ca_file",
    "elasticsearch.tls.cert_file",
    "elasticsearch.tls.key_file",
)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ (a list or mapping of sections counts as one key)."""
    out: list[str] = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        path = prefix + f.name
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += changed_keys(a, b, path + ".")
        elif a != b:
            out.append(path)
    return out


def restart_key(key: str, old: Config, new: Config) -> str | None:
    """The key fixed for the process that `key` falls under, if any."""
    for fixed in RESTART_KEYS:
        if key == fixed or key.startswith(fixed + "."):
            return fixed
    if key == "elasticsearch.hosts" and bool(old.elasticsearch.hosts) != bool(
        new.elasticsearch.hosts
    ):
        return key  # between Elasticsearch and stdout: another sink
    return None


def keep(new: Config, old: Config, keys: list[str]) -> Config:
    """`new` with the values of `keys` (dotted paths) taken from `old`."""
    out = copy.deepcopy(new)
    for key in keys:
        *parents, name = key.split(".")
        target, source = out, old
        for part in parents:
            target, source = getattr(target, part), getattr(source, part)
        setattr(target, name, copy.deepcopy(getattr(source, name)))
    return out


def config_hash(cfg: Config) -> str:
    """A short hash of a config with its secret values masked (safe to show)."""
    return hashlib.sha256(orjson.dumps(_plain(cfg), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: ("<secret>" if getattr(value, f.name) else "")
            if f.metadata.get("secret")
            else _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def credential_paths(cfg: Config) -> dict[str, str]:
    out = {}
    for key in CREDENTIAL_FILES:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value:
            out[key] = value
    return out


Apply = Callable[[Config, bool], "asyncio.Future[None]"]  # (effective config, sink too)


class Reloader:
    """Watches the config file and its credential files; reloads on change or SIGHUP."""

    def __init__(
        self,
        path: str,
        running: Config,
        apply: Apply,
        metrics: Metrics,
        transform: Callable[[Config], Config] = lambda cfg: cfg,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.path, self.running, self.apply = path, running, apply
        self.metrics, self.transform, self.interval = metrics, transform, interval
        self.watch = ContentWatch()
        self.watch.track({"config": path, **credential_paths(running)})
        self._requested = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._set_info(running)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def request(self) -> None:
        """SIGHUP: load the file again, and read the credential files again, now."""
        self._requested = True
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            forced, self._requested = self._requested, False
            try:
                await self.check(forced)
            except Exception:  # a bug here must not end the watching, nor the daemon
                log.exception("config reload failed unexpectedly; the running config stays")

    async def check(self, forced: bool = False) -> str | None:
        """Reload if a watched file has new content (or `forced`); return the result
        ("applied" or "refused"), or None if there was nothing to do."""
        contents = self.watch.changed()
        if not contents and not forced:
            return None
        trigger = "sighup" if forced else "file"
        files = sorted(k for k in contents if k != "config")
        text = contents.get("config")
        try:
            new = await asyncio.to_thread(self._load, text)
        except ConfigError as exc:
            self.metrics.config_reloads.inc(1, "refused")
            log.error(
                "config reload refused; the running config stays",
                extra={"trigger": trigger, "error": str(exc), "config": self.path},
            )
            return "refused"
        old = self.running
        changed = changed_keys(old, new)
        restart = sorted({r for k in changed if (r := restart_key(k, old, new)) is not None})
        live = [k for k in changed if restart_key(k, old, new) is None]
        effective = keep(new, old, restart)
        sink = forced or bool(files) or any(k.startswith("elasticsearch.") for k in live)
        try:
            await self.apply(effective, sink)
        except ConfigError as exc:  # e.g. a credential file unreadable when the sink reads it
            self.metrics.config_reloads.inc(1, "refused")
            log.error(
                "config reload refused; the running config stays",
                extra={"trigger": trigger, "error": str(exc), "config": self.path},
            )
            return "refused"
        self.running = effective
        self.watch.track({"config": self.path, **credential_paths(effective)})
        self.metrics.config_reloads.inc(1, "applied")
        self._set_info(effective)
        log.info(
            "config reloaded"
            + (f"; needs a restart, running value kept: {', '.join(restart)}" if restart else ""),
            extra={
                "trigger": trigger,
                "changed": live + [f"{k} (file content)" for k in files],
                "restart_needed": restart,
                "config_hash": config_hash(effective),
            },
        )
        return "applied"

    def _load(self, text: bytes | None) -> Config:
        """Parse and validate (in a thread: validation reads files and resolves names)."""
        if text is None:
            try:
                with open(self.path, "rb") as f:
                    text = f.read()
            except OSError as exc:
                raise ConfigError(f"{self.path}: cannot read config file: {exc.strerror}") from None
        cfg = parse_config(text.decode(), source=self.path)
        validate(cfg)
        return self.transform(cfg)

    def _set_info(self, cfg: Config) -> None:
        info = self.metrics.config_info
        info.values.clear()
        info.set(1.0, config_hash(cfg))
        self.metrics.config_reload_time.set(time.time())
