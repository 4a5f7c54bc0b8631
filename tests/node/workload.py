"""The node tests' workload and what it must become in Elasticsearch.

The writer image (tests/harness/node/images_src/writer) writes line i of pod P as
"P <i:08d> <body(i)>"; `expected_message` is the same function, so every document can be
checked whole, and `LineLedger` tells which numbers are missing or doubled per pod.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.elasticsearch import EsTestClient
from tests.harness.node import images

NAMESPACE_LABELS = {"team": "node-tests"}


def body(i: int, traces: bool) -> str:
    if i % 1000 == 999:
        return "L" + chr(ord("a") + i % 26) * (39_999 - 1)
    if traces and i % 100 == 50:
        frames = "".join(
            f"\n\tat com.example.Worker.step{k}(Worker.java:{10 + k})" for k in range(4)
        )
        return f"java.lang.IllegalStateException: boom {i}{frames}\n\t... 3 more"
    return "short " + "x" * (50 + i % 50)


def expected_message(pod: str, i: int, traces: bool) -> str:
    return f"{pod} {i:08d} {body(i, traces)}"


def parse(message: str) -> tuple[str, int, int | None] | None:
    """(pod, number, n) where n is the count of an END line, else None; None for a
    message that is not a whole written line (a piece of one)."""
    parts = message.split(" ", 2)
    if len(parts) < 3 or len(parts[1]) != 8 or not parts[1].isdigit() or parts[0][:1].isspace():
        return None
    pod, number, rest = parts
    if rest.startswith("END "):
        return pod, int(number), int(rest.split()[1])
    return pod, int(number), None


def writer_deployment(
    ns: str, name: str, lines: int, rate: int = 2000, traces: bool = False
) -> dict[str, Any]:
    """A Deployment of one writer pod (the owner workload the documents must name)."""
    args = ["-rate", str(rate), "-lines", str(lines), "-pod", "$(POD_NAME)"]
    if traces:
        args.append("-traces")
    annotations = {"shipper.io/multiline": "java"} if traces else {}
    labels = {"app": name, "tier": "writer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "writer",
                            "image": images.WRITER_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": args,
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                        }
                    ],
                },
            },
        },
    }


def has_namespace_labels(doc: dict[str, Any]) -> bool:
    """The test's namespace labels (the apiserver adds kubernetes.io/metadata.name too)."""
    labels = doc["kubernetes"].get("namespace_labels") or {}
    return all(labels.get(k) == v for k, v in NAMESPACE_LABELS.items())


def namespace(ns: str) -> dict[str, Any]:
    meta = {"name": ns, "labels": NAMESPACE_LABELS}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


# ---- Elasticsearch ---------------------------------------------------------------------------

SOURCE = [
    "message",
    "@timestamp",
    "log.offset",
    "log.flags",
    "log.file.path",
    "kubernetes.pod.name",
    "kubernetes.namespace",
    "kubernetes.labels",
    "kubernetes.namespace_labels",
    "kubernetes.deployment.name",
    "kubernetes.container.name",
]


def documents(client: EsTestClient, index: str, ns: str) -> list[dict[str, Any]]:
    """Every document of namespace `ns`, duplicates included (a point in time, paged)."""
    client.refresh(index)
    status, pit = client.request("POST", f"/{index}/_pit?keep_alive=2m")
    assert status == 200, pit
    pit_id = pit["id"]
    out: list[dict[str, Any]] = []
    after = None
    try:
        while True:
            body_: dict[str, Any] = {
                "size": 5000,
                "pit": {"id": pit_id, "keep_alive": "2m"},
                "query": {"term": {"kubernetes.namespace": ns}},
                "sort": [{"_shard_doc": "asc"}],
                "_source": SOURCE,
                "track_total_hits": False,
            }
            if after is not None:
                body_["search_after"] = after
            status, result = client.request("POST", "/_search", body_)
            assert status == 200, result
            hits = result["hits"]["hits"]
            if not hits:
                return out
            pit_id = result.get("pit_id", pit_id)
            out.extend(hit["_source"] for hit in hits)
            after = hits[-1]["sort"]
    finally:
        client.request("DELETE", "/_pit", {"id": pit_id})


def tune_for_throughput(client: EsTestClient, index: str) -> None:
    """The test Elasticsearch indexes faster on a busy two-core machine without an fsync
    per bulk request and a refresh a second (tests refresh before they count)."""
    status, result = client.request(
        "PUT",
        f"/{index}/_settings",
        {"index": {"translog.durability": "async", "refresh_interval": "30s"}},
    )
    assert status in (200, 404), result  # 404: no data stream yet (tuned once it is)


def count(client: EsTestClient, index: str, ns: str) -> int:
    return client.count(index, {"term": {"kubernetes.namespace": ns}})


@dataclass
class PodReport:
    pod: str
    end: int | None = None  # the count its END line gave
    seen: collections.Counter[int] = field(default_factory=collections.Counter)
    wrong: list[str] = field(default_factory=list)  # documents whose text is not the line's
    split: int = 0  # lines a rotation split in two documents (start and rest)
    # rests of split lines whose start never arrived (given up with a deleted file)
    rests_alone: list[str] = field(default_factory=list)

    def missing(self) -> list[int]:
        if self.end is None:
            return []
        return [i for i in range(self.end + 1) if i not in self.seen]

    def doubled(self) -> list[int]:
        return sorted(i for i, n in self.seen.items() if n > 1)

    def describe(self) -> str:
        missing, doubled = self.missing(), self.doubled()
        return (
            f"{self.pod}: END={self.end}, {sum(self.seen.values())} documents, "
            f"{len(missing)} missing (first {missing[:8]}), {len(doubled)} doubled "
            f"(first {doubled[:8]}), {len(self.wrong)} with wrong text (first {self.wrong[:2]}), "
            f"{self.split} split by a rotation, {len(self.rests_alone)} rests without a start"
        )


def ledger(docs: list[dict[str, Any]], traces: dict[str, bool]) -> dict[str, PodReport]:
    """Per pod: which numbers arrived how often, whether each text is the line written.
    `traces`: {deployment name: writes traces}.

    A long line the runtime split into P...F records across a rotation (it reopens the
    file between two records) arrives as two documents: its start from the old file,
    flagged `partial`, and its rest as the first record of the new file. Such a pair
    counts as the line; a start or a rest without its other half is wrong."""
    out: dict[str, PodReport] = {}
    rests: dict[str, list[str]] = collections.defaultdict(list)  # pod -> texts at offset 0
    starts: list[tuple[PodReport, str, str]] = []  # (report, text shipped, line written)
    for doc in docs:
        pod = (doc.get("kubernetes") or {}).get("pod", {}).get("name", "?")
        log = doc.get("log") or {}
        parsed = parse(doc["message"])
        if parsed is None:
            if log.get("offset") == 0 and not log.get("flags"):
                rests[pod].append(doc["message"])
                continue
            report = out.setdefault(pod, PodReport(pod))
            offset = log.get("offset")
            report.wrong.append(f"{doc['message'][:60]!r}... (a piece of a line, offset {offset})")
            continue
        pod, number, end = parsed
        report = out.setdefault(pod, PodReport(pod))
        report.seen[number] += 1
        if end is not None:
            report.end = number
            if end != number:
                report.wrong.append(doc["message"][:80])
            continue
        deployment = (doc.get("kubernetes") or {}).get("deployment", {}).get("name", "")
        want = expected_message(pod, number, traces.get(deployment, False))
        if doc["message"] == want:
            continue
        if "partial" in log.get("flags", ()) and want.startswith(doc["message"]):
            starts.append((report, doc["message"], want))
            continue
        report.wrong.append(
            f"{doc['message'][:60]!r}... ({len(doc['message'])} bytes, offset {log.get('offset')})"
        )
    for report, text, want in starts:
        rest = want[len(text) :]
        if rest in rests[report.pod]:
            rests[report.pod].remove(rest)
            report.split += 1
        else:
            report.wrong.append(f"{text[:60]!r}... (the start of a line, its rest not found)")
    for pod, texts in rests.items():
        report = out.setdefault(pod, PodReport(pod))
        report.rests_alone += texts
    return out


# ---- every byte the kubelet ever wrote, kept ------------------------------------------------


class LogKeeper:
    """Hard-links every log file of the pods in `pods_dir` while it exists, so the test
    has every byte the runtime wrote, whatever the kubelet rotated and deleted since.

    A file is kept once per inode (its first name); the rotation `0.log -> 0.log.<ts>` is a
    rename of the same inode, and the gzip step copies it (`.gz.tmp`, `.gz`), which is
    not kept. Polls every 20 ms: the kubelet keeps each `0.log` for seconds."""

    def __init__(
        self, pods_dir: Path, keep_dir: Path | None, namespace: str, link: bool = True
    ) -> None:
        """`link=False`: only count the files (nothing keeps an inode alive, so an inode
        number seen again after it vanished is a new file: the kubelet reuses them)."""
        self.pods_dir = pods_dir
        self.keep_dir = keep_dir
        self.namespace = namespace
        self.link = link
        self.files_per_pod: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.kept: dict[tuple[int, int], Path] = {}
        self.order: list[tuple[str, Path]] = []  # (pod directory, kept file) as first seen
        self.deleted: set[Path] = set()  # kept files whose last name disappeared
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if link:
            assert keep_dir is not None
            keep_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LogKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except OSError as exc:  # a directory removed while listed: look again
                self.errors.append(repr(exc))
            time.sleep(0.02)

    def scan(self) -> None:
        seen_now: set[tuple[int, int]] = set()
        for pod_dir in self.pods_dir.glob(f"{self.namespace}_*"):
            for path in pod_dir.glob("*/*.log*"):
                if path.name.endswith((".gz", ".tmp")):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                seen_now.add(key)
                if key in self.kept:
                    continue
                self.files_per_pod[pod_dir.name] += 1
                target = path
                if self.link:
                    assert self.keep_dir is not None
                    target = self.keep_dir / f"{len(self.kept):05d}-{pod_dir.name}-{path.name}"
                    try:
                        os.link(path, target)
                    except FileNotFoundError:
                        continue
                self.kept[key] = target
                self.order.append((pod_dir.name, target))
        for key, target in list(self.kept.items()):
            if key not in seen_now:
                self.deleted.add(target)
                if not self.link:  # nothing holds the inode: its number may come back
                    del self.kept[key]  # for the kubelet's next 0.log, a new file


def cri_records(path: Path) -> list[tuple[bytes, bool, int]]:
    """(content, final, bytes) of each CRI record of a file."""
    out = []
    for raw in path.read_bytes().splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # being written
        _stamp, _stream, tag, content = raw[:-1].split(b" ", 3)
        out.append((content, tag == b"F", len(raw)))
    return out


def logical_lines(paths: list[Path]) -> list[tuple[str, int, dict[Path, int]]]:
    """(pod, number, bytes in each file) of every line of one container's files, oldest
    first. A P... run is one line with its F record, even when the runtime reopened the
    file between them (a rotation splits it: its start in one file, the rest in the next);
    a trace's continuation lines belong to the line before them."""
    out: list[tuple[str, int, dict[Path, int]]] = []
    parts: list[bytes] = []
    pieces: dict[Path, int] = {}
    for path in paths:
        for content, final, n in cri_records(path):
            parts.append(content)
            pieces[path] = pieces.get(path, 0) + n
            if not final:
                continue
            first = b"".join(parts).decode().split("\n", 1)[0]
            with_number = first.split(" ", 2)
            numbered = len(with_number) >= 2 and len(with_number[1]) == 8
            if numbered and with_number[1].isdigit() and not first[:1].isspace():
                out.append((with_number[0], int(with_number[1]), pieces))
            elif out:  # a continuation line of a trace: part of the line before it
                for piece, size in pieces.items():
                    out[-1][2][piece] = out[-1][2].get(piece, 0) + size
            parts, pieces = [], {}
    return out
