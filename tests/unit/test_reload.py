"""Config reload: noticing new content (ConfigMap symlink swaps, rename over, no-op
rewrites), refusing invalid configs with the key at fault, applying the rest by name."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from shipper.config import Config, parse_config
from shipper.config.watch import ContentWatch
from shipper.observe import Metrics
from shipper.reload import Reloader, changed_keys, config_hash, keep, restart_key


def configmap(root: Path, files: dict[str, str], stamp: str) -> Path:
    """A directory as the kubelet mounts a ConfigMap: `..<stamp>/` holding the files,
    `..data -> ..<stamp>`, and `<name> -> ..data/<name>`; a later call is an update:
    a new timestamped directory, `..data_tmp` renamed over `..data`, the old one deleted."""
    root.mkdir(exist_ok=True)
    new = root / f"..{stamp}"
    new.mkdir()
    for name, text in files.items():
        (new / name).write_text(text)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.symlink(new.name, root / "..data_tmp")
    os.rename(root / "..data_tmp", root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)
    if old is not None:
        for f in (root / old).iterdir():
            f.unlink()
        (root / old).rmdir()
    return root / next(iter(files))


# ---- noticing a change ----------------------------------------------------------------


def test_configmap_symlink_swap_is_a_change(tmp_path):
    path = configmap(tmp_path / "cm", {"config.yaml": "workers: 1\n"}, "2026_12_01_10_00_00.1")
    watch = ContentWatch()
    assert watch.track({"config": str(path)}) == {"config": b"workers: 1\n"}
    assert watch.changed() == {}
    configmap(tmp_path / "cm", {"config.yaml": "workers: 2\n"}, "2026_12_01_10_05_00.2")
    assert watch.changed() == {"config": b"workers: 2\n"}
    assert watch.changed() == {}, "a change is reported once"


def test_configmap_update_with_the_same_text_is_no_change(tmp_path):
    path = configmap(tmp_path / "cm", {"config.yaml": "workers: 1\n"}, "2026_12_01_10_00_00.1")
    watch = ContentWatch()
    watch.track({"config": str(path)})
    configmap(tmp_path / "cm", {"config.yaml": "workers: 1\n"}, "2026_12_01_10_05_00.2")
    assert watch.changed() == {}


def test_a_file_renamed_over_the_path_is_a_change(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    watch = ContentWatch()
    watch.track({"config": str(path)})
    (tmp_path / "new.yaml").write_text("a: 2\n")
    os.rename(tmp_path / "new.yaml", path)
    assert watch.changed() == {"config": b"a: 2\n"}


def test_touch_or_same_content_renamed_over_is_no_change(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    watch = ContentWatch()
    watch.track({"config": str(path)})
    os.utime(path, ns=(1, 1))
    assert watch.changed() == {}
    (tmp_path / "new.yaml").write_text("a: 1\n")
    os.rename(tmp_path / "new.yaml", path)
    assert watch.changed() == {}


def test_an_untouched_file_is_not_read_again(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    reads: list[str] = []

    def read(p: str) -> bytes:
        reads.append(p)
        return Path(p).read_bytes()

    watch = ContentWatch(read=read)
    watch.track({"config": str(path)})
    first = len(reads)
    for _ in range(5):
        assert watch.changed() == {}
    assert len(reads) == first


def test_a_deleted_file_is_a_change_once(tmp_path):
    path = tmp_path / "secret"
    path.write_text("s3cret")
    watch = ContentWatch()
    watch.track({"password": str(path)})
    path.unlink()
    assert watch.changed() == {"password": None}
    assert watch.changed() == {}


# ---- what changed, and what is kept ---------------------------------------------------


def cfg(**sections: Any) -> Config:
    base: dict[str, Any] = {"kubernetes": {"enabled": False}, "metrics": {"listen": ""}}
    base.update(sections)
    return parse_config(yaml.safe_dump(base))


def test_changed_keys_are_named_by_path_and_restart_keys_kept():
    old = cfg(inputs={"exclude": []}, checkpoint={"path": "/a"})
    new = cfg(inputs={"exclude": ["*noisy*"]}, checkpoint={"path": "/b"})
    changed = changed_keys(old, new)
    assert changed == ["inputs.exclude", "checkpoint.path"]
    restart = [r for k in changed if (r := restart_key(k, old, new))]
    assert restart == ["checkpoint.path"]
    kept = keep(new, old, restart)
    assert kept.checkpoint.path == "/a" and kept.inputs.exclude == ["*noisy*"]
    assert new.checkpoint.path == "/b", "the loaded config itself is not changed"


def test_switching_between_stdout_and_elasticsearch_needs_a_restart():
    old, new = cfg(), cfg(elasticsearch={"hosts": ["http://es:9200"]})
    assert restart_key("elasticsearch.hosts", old, new) == "elasticsearch.hosts"
    other = cfg(elasticsearch={"hosts": ["http://other:9200"]})
    assert restart_key("elasticsearch.hosts", new, other) is None


def test_config_hash_masks_secrets_and_follows_other_keys():
    a = cfg(elasticsearch={"hosts": ["http://es:9200"], "username": "u", "password": "one"})
    b = cfg(elasticsearch={"hosts": ["http://es:9200"], "username": "u", "password": "two"})
    c = cfg(elasticsearch={"hosts": ["http://es:9201"], "username": "u", "password": "one"})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


# ---- the reloader ---------------------------------------------------------------------


class Applied:
    def __init__(self) -> None:
        self.calls: list[tuple[Config, bool]] = []

    def __call__(self, new: Config, sink: bool) -> asyncio.Future[None]:
        self.calls.append((new, sink))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(yaml.safe_dump(data))
    os.rename(tmp, path)


def reloader_for(tmp_path: Path, data: dict[str, Any]) -> tuple[Reloader, Applied, Path]:
    path = tmp_path / "config.yaml"
    write(path, data)
    applied = Applied()
    running = parse_config(path.read_text())
    return Reloader(str(path), running, applied, Metrics()), applied, path


BASE: dict[str, Any] = {
    "kubernetes": {"enabled": False},
    "metrics": {"listen": ""},
    "inputs": {"paths": ["/logs/*.log"]},
}


def test_an_invalid_config_is_refused_with_its_key_and_the_running_one_stays(tmp_path, caplog):
    reloader, applied, path = reloader_for(tmp_path, BASE)
    running = reloader.running
    write(path, {**BASE, "parsing": {"multiline": {"rule": "cobol"}}})
    with caplog.at_level(logging.INFO, logger="shipper.reload"):
        assert asyncio.run(reloader.check()) == "refused"
    assert applied.calls == []
    assert reloader.running is running
    assert reloader.metrics.config_reloads.get("refused") == 1
    [record] = [r for r in caplog.records if r.message.startswith("config reload refused")]
    assert "parsing.multiline.rule" in record.error and "java" in record.error


def test_a_config_validate_refuses_is_refused_on_reload(tmp_path, caplog):
    reloader, applied, path = reloader_for(tmp_path, BASE)
    write(path, {**BASE, "elasticsearch": {"hosts": ["http://es:9200"], "password": "hunter2"}})
    with caplog.at_level(logging.INFO, logger="shipper.reload"):
        assert asyncio.run(reloader.check()) == "refused"
    assert applied.calls == []
    [record] = [r for r in caplog.records if r.message.startswith("config reload refused")]
    assert record.error.startswith("elasticsearch.username:")
    assert "hunter2" not in record.error


def test_a_valid_change_is_applied_and_logged_once_by_key_name(tmp_path, caplog):
    reloader, applied, path = reloader_for(tmp_path, BASE)
    hash_before = next(iter(reloader.metrics.config_info.values))
    new = {**BASE, "inputs": {"paths": ["/logs/*.log"], "exclude": ["noisy*"]}}
    new["checkpoint"] = {"path": str(tmp_path / "elsewhere")}
    write(path, new)
    with caplog.at_level(logging.INFO, logger="shipper.reload"):
        assert asyncio.run(reloader.check()) == "applied"
        assert asyncio.run(reloader.check()) is None, "nothing new: nothing done"
    [(effective, sink)] = applied.calls
    assert effective.inputs.exclude == ["noisy*"]
    assert effective.checkpoint.path == "/var/lib/shipper", "needs a restart: kept"
    assert sink is False
    [record] = [r for r in caplog.records if r.message.startswith("config reloaded")]
    assert record.changed == ["inputs.exclude"]
    assert record.restart_needed == ["checkpoint.path"]
    assert "checkpoint.path" in record.message
    assert reloader.metrics.config_reloads.get("applied") == 1
    assert next(iter(reloader.metrics.config_info.values)) != hash_before


def test_a_credential_file_swap_reconnects_the_sink_without_logging_it(tmp_path, caplog):
    secrets = tmp_path / "secret"
    password = configmap(secrets, {"password": "first-pass"}, "2026_12_01_10_00_00.1")
    es = {"hosts": ["http://es:9200"], "username": "elastic", "password_file": str(password)}
    reloader, applied, _ = reloader_for(tmp_path, {**BASE, "elasticsearch": es})
    configmap(secrets, {"password": "second-pass"}, "2026_12_01_10_05_00.2")
    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(reloader.check()) == "applied"
    [(_, sink)] = applied.calls
    assert sink is True
    [record] = [r for r in caplog.records if r.message.startswith("config reloaded")]
    assert record.changed == ["elasticsearch.password_file (file content)"]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "first-pass" not in text and "second-pass" not in text


def test_sighup_reloads_even_without_a_change(tmp_path):
    reloader, applied, _ = reloader_for(tmp_path, BASE)
    assert asyncio.run(reloader.check(forced=True)) == "applied"
    [(_, sink)] = applied.calls
    assert sink is True, "SIGHUP reads the credentials again"
