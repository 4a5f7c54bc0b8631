"""shipper installed on a real node as users install it, shipping real pods' logs through
real kubelet rotation into a real Elasticsearch.

One node and one Elasticsearch for the module (expensive); each test has namespaces of
its own. Order matters only for cost: the kustomize install is removed after its test,
the Helm install stays for the workload tests.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.observe import scrape
from tests.harness.elasticsearch import EsTestClient
from tests.node import install, workload
from tests.support import wait_for

pytestmark = [pytest.mark.node, pytest.mark.elasticsearch]

INDEX = install.DATA_STREAM
RATE = 2000  # lines per second per writer
SECONDS = 120  # each writer writes RATE * SECONDS numbered lines


@pytest.fixture(scope="module")
def es(node_es: Any) -> EsTestClient:
    return EsTestClient(node_es.url)


def wait_ready(node: Any, timeout: float = 240) -> dict[str, Any]:
    try:
        return wait_for(lambda: install.ready_pod(node), timeout, "a Running, Ready shipper pod")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{install.describe(node)}") from None


def metrics(pod: dict[str, Any]) -> dict[str, float]:
    """/metrics of a shipper pod, from the host (the pod network is on the host's bridge)."""
    return scrape(f"{pod['status']['podIP']}:2020")


def total(values: dict[str, float], name: str) -> float:
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def run_to_completion(node: Any, ns: str, name: str, image: str, command: list[str]) -> str:
    """A pod that runs `command` once; its output."""
    node.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "probe",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": command,
                        }
                    ],
                },
            }
        ]
    )

    def done() -> bool:
        phase = node.get("pod", "-n", ns, name)["status"].get("phase")
        assert phase != "Failed", node.kubectl("-n", ns, "logs", name, check=False).stdout
        return phase == "Succeeded"

    wait_for(done, 120, f"pod {name} to finish")
    return node.kubectl("-n", ns, "logs", name).stdout


METRICS_PROBE = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    print(r.status)
    print(r.read().decode())
"""

SECURITY_PROBE = """
import json, os
def status(pid):
    return {k: v.strip() for k, v in (l.split(":", 1) for l in open(f"/proc/{pid}/status"))}
try:
    open("/written-by-probe", "w")
    rootfs = "writable"
except OSError as exc:
    rootfs = exc.errno
print(json.dumps({
    "pid1": [a.decode() for a in open("/proc/1/cmdline", "rb").read().split(b"\\0") if a],
    "pid1_caps": {k: status(1)[k] for k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")},
    "uid": os.getuid(),
    "rootfs": rootfs,
}))
"""


def check_running_shipper(node: Any, es: EsTestClient, pod: dict[str, Any], ns: str) -> None:
    """What every install must give: metrics answered from inside the cluster, the
    securityContext in force, and a pod's lines in Elasticsearch with metadata."""
    name = pod["metadata"]["name"]
    url = f"http://{pod['status']['podIP']}:2020/metrics"
    out = run_to_completion(
        node, ns, "metrics-probe", node.shipper_image, ["python3", "-c", METRICS_PROBE, url]
    )
    assert out.startswith("200\n") and "shipper_lines_read_total" in out, out[:500]

    raw = node.kubectl("-n", install.NS, "exec", name, "--", "python3", "-c", SECURITY_PROBE)
    seen = json.loads(raw.stdout)
    assert "shipper" in " ".join(seen["pid1"]) and "run" in seen["pid1"], seen
    assert seen["pid1_caps"] == {
        "CapEff": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }, seen
    assert seen["uid"] == 0 and seen["rootfs"] == 30, seen  # 30: EROFS

    node.apply([workload.writer_deployment(ns, "smoke", lines=300, rate=200)])

    def smoke_documents() -> list[dict[str, Any]]:
        return [d for d in workload.documents(es, INDEX, ns) if d["message"].startswith("smoke-")]

    def complete() -> bool:
        """The smoke writer's lines all in, through its END line (other pods log here
        too, so a count of the namespace's documents would not say it)."""
        reports = list(workload.ledger(smoke_documents(), {}).values())
        return bool(reports) and reports[0].end is not None and not reports[0].missing()

    try:
        wait_for(complete, 180, "the smoke writer's lines through its END line")
    finally:
        docs = smoke_documents()
    [line] = workload.ledger(docs, {}).values()
    assert line.end == 300 and not line.missing() and not line.doubled(), line.describe()
    assert not line.wrong and not line.rests_alone, line.describe()
    assert all(d["kubernetes"]["deployment"]["name"] == "smoke" for d in docs)
    assert all(workload.has_namespace_labels(d) for d in docs), docs[0]["kubernetes"]


def test_kustomize_bundle_runs_ready_ships_and_serves_metrics(
    kube_node: Any, node_es: Any, es: EsTestClient, tmp_path: Path
) -> None:
    overlay = install.kustomize_overlay(kube_node, tmp_path / "overlay", node_es)
    kube_node.kubectl("apply", "-k", str(overlay))
    try:
        pod = wait_ready(kube_node)
        kube_node.apply([workload.namespace("kustomize-smoke")])
        check_running_shipper(kube_node, es, pod, "kustomize-smoke")
    finally:
        kube_node.kubectl("delete", "namespace", "kustomize-smoke", "--wait=true", check=False)
        kube_node.kubectl("delete", "-k", str(overlay), "--wait=true", check=False)
    wait_for(lambda: not install.shipper_pods(kube_node), 120, "the kustomize install gone")


@pytest.fixture(scope="module")
def helm_shipper(kube_node: Any, node_es: Any) -> Iterator[None]:
    install.helm_install(kube_node, node_es)
    yield
    install.helm_uninstall(kube_node)


def test_helm_install_runs_ready_ships_and_serves_metrics(
    kube_node: Any, es: EsTestClient, helm_shipper: None
) -> None:
    pod = wait_ready(kube_node)
    annotations = pod["metadata"]["annotations"]
    assert "checksum/config" not in annotations  # the config is reloaded live
    kube_node.apply([workload.namespace("helm-smoke")])
    try:
        check_running_shipper(kube_node, es, pod, "helm-smoke")
    finally:
        kube_node.kubectl("delete", "namespace", "helm-smoke", "--wait=false", check=False)


def number_ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [(a, b) for a, b in out]


class ShipperLog:
    """`kubectl logs -f` of a shipper pod, so what it logs as it stops is kept."""

    def __init__(self, node: Any, pod: str) -> None:
        assert node.api is not None
        self.path = node.workdir / f"log-{pod}.jsonl"
        self._out = open(self.path, "wb")  # noqa: SIM115 - closed in summary()
        self.proc = subprocess.Popen(
            [str(node.bins["kubectl"]), f"--kubeconfig={node.api.kubeconfig_path}",
             "-n", install.NS, "logs", "-f", pod],
            stdout=self._out,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far."""
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()

    def summary(self, timeout: float = 60) -> dict[str, Any]:
        """The "shipper stopped" record (its counters), once the pod has gone."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()
        for line in reversed(self.path.read_text(errors="replace").splitlines()):
            if '"shipper stopped"' in line:
                return json.loads(line)
        raise AssertionError(f"no 'shipper stopped' line:\n{self.path.read_text()[-3000:]}")


def pods_of(node: Any, ns: str, app: str) -> list[str]:
    items = node.get("pods", "-n", ns, "-l", f"app={app}")["items"]
    return [p["metadata"]["name"] for p in items if p.get("status", {}).get("phase") == "Running"]


def newest_rotation_messages(container_dir: Path) -> list[str]:
    """The messages of a container's newest uncompressed rotation, the runtime's split
    lines (P,...,F) joined as `kubectl logs` joins them."""
    rotations = sorted(p for p in container_dir.glob("0.log.*") if not p.name.endswith("gz"))
    assert rotations, sorted(p.name for p in container_dir.iterdir())
    messages: list[str] = []
    pending = ""
    for raw in rotations[-1].read_bytes().decode().splitlines():
        _, _, tag, text = raw.split(" ", 3)
        pending += text
        if tag == "F":
            messages.append(pending)
            pending = ""
    return messages


def instant(stamp: str) -> str:
    """An RFC 3339 UTC time whose text sorts as the time does. The runtime writes Go's
    RFC3339Nano, which drops trailing zeros of the fraction: as text, "…01.12345Z" sorts
    after "…01.123451Z", which is later."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{fraction:0<9}Z"


def sorted_messages(docs: list[dict[str, Any]]) -> list[str]:
    """Messages in the order the runtime wrote them: time, then file offset."""
    ordered = sorted(docs, key=lambda d: (instant(d["@timestamp"]), d["log"]["offset"]))
    return [d["message"] for d in ordered]


def test_busy_pods_rotated_restarted_and_deleted_every_line_once(
    kube_node: Any, es: EsTestClient, helm_shipper: None
) -> None:
    """Three writers at RATE lines/s for SECONDS (long lines split P,P,F; one pod of Java
    traces), rotated by the kubelet every few seconds. Mid-stream the shipper pod is
    deleted (the DaemonSet brings it back) and a writer pod is deleted (its Deployment
    starts another). Every line once, with its pod's metadata."""
    ns = "busy"
    node = kube_node
    first = wait_ready(node)
    workload.tune_for_throughput(es, INDEX)
    lines = RATE * SECONDS
    traces = {"alpha": False, "bravo": False, "trace": True, "quiet": False}
    files = workload.LogKeeper(node.logs_dir, None, ns, link=False).__enter__()
    node.apply(
        [
            workload.namespace(ns),
            workload.writer_deployment(ns, "alpha", lines, RATE),
            workload.writer_deployment(ns, "bravo", lines, RATE),
            workload.writer_deployment(ns, "trace", lines, RATE, traces=True),
            # a pod the kubelet never rotates: `kubectl logs` holds all of it
            workload.writer_deployment(ns, "quiet", 500, 50),
        ]
    )
    try:
        wait_for(lambda: all(pods_of(node, ns, a) for a in traces), 120, "the writers running")
        began = time.monotonic()
        alpha = pods_of(node, ns, "alpha")[0]
        wait_for(lambda: workload.count(es, INDEX, ns), 120, "the first documents")
        workload.tune_for_throughput(es, INDEX)

        def log_files(n: int) -> bool:
            """Each busy writer has had n log files (n - 1 rotations) so far."""
            busy = [c for d, c in files.files_per_pod.items() if "_quiet-" not in d]
            return len(busy) >= 3 and min(busy) >= n

        # the shipper pod deleted mid-stream; what it said as it stopped is kept
        def caught_up() -> bool:
            """Nothing the kubelet may delete is left unread: a restart now must lose
            nothing (one further behind than the kubelet keeps files gives the rest up,
            counted: another test's subject)."""
            return total(metrics(first), "shipper_lag_bytes") < 1 << 20

        try:
            # five rotations of each busy writer, or two if the machine slows the writers
            # down (they write on a schedule, not a clock), before a third of the run
            wait_for(
                lambda: (
                    log_files(3)
                    and (log_files(6) or time.monotonic() - began > SECONDS / 3)
                    and caught_up()
                ),
                600,
                "five rotations of each busy writer (two after a third of the run), "
                "with shipper caught up",
            )
        except AssertionError as exc:
            listing = sorted(str(p.relative_to(node.logs_dir)) for p in node.logs_dir.rglob("*"))
            raise AssertionError(
                f"{exc}: lag {total(metrics(first), 'shipper_lag_bytes'):.0f} bytes, "
                f"log files seen per pod {dict(files.files_per_pod)}, scan errors "
                f"{files.errors[:3]}, thread alive {files._thread.is_alive()}, now {listing}"
            ) from None
        old_log = ShipperLog(node, first["metadata"]["name"])
        node.kubectl("-n", install.NS, "delete", "pod", first["metadata"]["name"], "--wait=false")
        first_uid = first["metadata"]["uid"]
        wait_for(
            lambda: (p := install.ready_pod(node)) and p["metadata"]["uid"] != first_uid,
            180,
            "the DaemonSet's new shipper pod Ready",
        )
        stopped = old_log.summary()
        assert stopped["bytes_given_up"] == 0, stopped
        # a writer pod deleted while it writes (its Deployment starts a new one): after
        # eleven rotations of each busy writer, or at 70% of the run if that comes first
        wait_for(
            lambda: log_files(12) or time.monotonic() - began > SECONDS * 0.7,
            SECONDS,
            "eleven rotations of each busy writer",
        )
        node.kubectl("-n", ns, "delete", "pod", alpha, "--wait=true")

        def complete() -> dict[str, workload.PodReport] | None:
            reports = workload.ledger(workload.documents(es, INDEX, ns), traces)
            ended = [r for r in reports.values() if r.end is not None]
            if len(ended) < 5 or any(r.missing() for r in ended):
                return None
            return reports

        wait_for(complete, 600, "every writer's lines through its END line")
        pod = wait_ready(node)
        wait_for(
            lambda: (
                total(m := metrics(pod), "shipper_lag_bytes") == 0
                and total(m, "shipper_in_flight_bytes") == 0
            ),
            120,
            "shipper to have nothing left to deliver",
        )
        docs = workload.documents(es, INDEX, ns)
        reports = workload.ledger(docs, traces)
        # every check below, then one failure naming all that is wrong
        problems = [
            r.describe()
            for r in reports.values()
            if r.missing() or r.doubled() or r.wrong or r.rests_alone
        ]
        by_pod = collections.defaultdict(list)
        for d in docs:
            by_pod[d["kubernetes"]["pod"]["name"]].append(d)
        assert len(by_pod) == 5 and alpha in by_pod, sorted(by_pod)
        assert reports[alpha].end is not None and reports[alpha].end < lines  # cut short

        # enrichment: pod labels, namespace labels, owner, on every document, the
        # deleted pod's last ones (written as it was being deleted) included
        def unenriched(d: dict[str, Any]) -> bool:
            k = d["kubernetes"]
            app = k.get("labels", {}).get("app")
            return not (
                app
                and k["labels"].get("tier") == "writer"
                and workload.has_namespace_labels(d)
                and k.get("deployment", {}).get("name") == app
                and d["kubernetes"]["pod"]["name"].startswith(app + "-")
            )

        bad = [d["message"][:40] for d in docs if unenriched(d)]
        if bad:
            problems.append(f"{len(bad)} documents without their pod's metadata: {bad[:5]}")
        numbered = [(p[1], d) for d in by_pod[alpha] if (p := workload.parse(d["message"]))]
        last = [d for _, d in sorted(numbered, key=lambda nd: nd[0])[-1000:]]
        assert last and not [d for d in last if unenriched(d)]

        # the runtime's split lines (over 16 KiB: P,P,F) joined whole, so not flagged
        # `partial` (that flag means a line flushed before its last piece); the traces
        # joined and flagged `multiline` (their text was checked whole above)
        long = [d for d in docs if len(d["message"]) > 16384]
        assert len(long) >= 3 * (lines // 1000), len(long)
        if flagged := [d["message"][:30] for d in long if d["log"].get("flags")]:
            problems.append(f"{len(flagged)} long lines flagged: {flagged[:3]}")
        trace_docs = [d for d in docs if "\n\tat com.example" in d["message"]]
        if not all("multiline" in d["log"].get("flags", []) for d in trace_docs):
            problems.append("traces not flagged multiline")

        # the kubelet rotated each busy writer's log many times
        rotations = total(metrics(pod), "shipper_rotations_total")
        assert rotations >= 3 * 10, rotations

        # `kubectl logs` is what Elasticsearch holds, in order: all of it for the pod
        # never rotated, the current file's worth for a busy one
        quiet = pods_of(node, ns, "quiet")[0]
        if node.kubectl("-n", ns, "logs", quiet).stdout.splitlines() != sorted_messages(
            by_pod[quiet]
        ):
            problems.append("kubectl logs of the quiet pod differs from Elasticsearch")
        bravo = pods_of(node, ns, "bravo")[0]
        current = node.kubectl("-n", ns, "logs", bravo).stdout.splitlines()
        stored = sorted_messages(by_pod[bravo])
        if not current:
            # the kubelet rotated just after the writer's last line: the current file
            # is empty, and the file before it (not yet compressed) is the tail
            [pod_dir] = node.logs_dir.glob(f"{ns}_{bravo}_*")
            assert (pod_dir / "writer" / "0.log").stat().st_size == 0
            current = newest_rotation_messages(pod_dir / "writer")
        assert len(current) > 100, len(current)
        # the first line of the current file may be the end of a line split across a
        # rotation (its start is in the file before)
        tail = stored[len(stored) - len(current) + 1 :]
        if current[1:] != tail:
            pairs = enumerate(zip(current[1:], tail, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), None)
            where = [current[1:][at][:60], tail[at][:60]] if at is not None else "in length"
            problems.append(
                f"kubectl logs of a busy pod differs from Elasticsearch's tail: "
                f"{len(current)} lines against {len(stored)} stored, first at {at}: {where}"
            )
        assert not problems, "\n".join(problems)
    finally:
        files.__exit__()
        node.kubectl("delete", "namespace", ns, "--wait=true", timeout=300, check=False)


def test_elasticsearch_down_for_a_minute_what_the_kubelet_deleted_unread_is_counted(
    kube_node: Any, node_es: Any, es: EsTestClient, helm_shipper: None, tmp_path: Path
) -> None:
    """Elasticsearch stopped 60 s while two writers go on and the kubelet rotates, keeping 3
    files: shipper stops reading at its buffer bound, the kubelet deletes files it never
    read. The test keeps every byte the runtime wrote (hard links), so it knows which
    lines are lost without asking shipper: their bytes are shipper_bytes_given_up_total,
    and every other line is in Elasticsearch once."""
    ns = "outage"
    node = kube_node
    pod = wait_ready(node)
    given_before = total(metrics(pod), "shipper_bytes_given_up_total")
    shipper_log = ShipperLog(node, pod["metadata"]["name"])
    lines = RATE * 100
    traces = {"echo": False, "foxtrot": False}
    with workload.LogKeeper(node.logs_dir, tmp_path / "kept", ns) as keeper:
        node.apply(
            [
                workload.namespace(ns),
                workload.writer_deployment(ns, "echo", lines, RATE),
                workload.writer_deployment(ns, "foxtrot", lines, RATE),
            ]
        )
        try:
            wait_for(lambda: workload.count(es, INDEX, ns) > RATE * 10, 240, "lines flowing")
            workload.tune_for_throughput(es, INDEX)
            node_es.server.stop()
            stopped = time.monotonic()
            deleted_before = len(keeper.deleted)
            wait_for(lambda: time.monotonic() - stopped >= 60, 90, "60 s without Elasticsearch")
            deleted_during = len(keeper.deleted) - deleted_before
            node_es.server.start()
            back = time.monotonic() - stopped
            wait_for(lambda: total(metrics(pod), "shipper_sink_up") == 1, 300, "sink up again")
            sink_up = time.monotonic() - stopped

            def ended() -> bool:
                reports = workload.ledger(workload.documents(es, INDEX, ns), traces)
                return sum(r.end is not None for r in reports.values()) == 2

            wait_for(ended, 600, "both writers' END lines")
            wait_for(
                lambda: (
                    total(m := metrics(pod), "shipper_lag_bytes") == 0
                    and total(m, "shipper_in_flight_bytes") == 0
                ),
                180,
                "shipper to have nothing left to deliver",
            )
        except BaseException:
            if not node_es.server.is_running():
                node_es.server.start()
            node.kubectl("delete", "namespace", ns, "--wait=false", check=False)
            raise
    try:
        docs = workload.documents(es, INDEX, ns)
        reports = workload.ledger(docs, traces)
        shipped = {(r.pod, n) for r in reports.values() for n in r.seen}
        written: dict[tuple[str, int], int] = collections.Counter()
        lost_in: dict[Path, int] = collections.Counter()
        per_container: dict[str, list[Path]] = collections.defaultdict(list)
        for pod_dir, path in keeper.order:
            per_container[pod_dir].append(path)
        for paths in per_container.values():
            for pod_name, number, pieces in workload.logical_lines(paths):
                written[(pod_name, number)] += sum(pieces.values())
                if (pod_name, number) in shipped:
                    continue
                # the line's pieces in deleted files are lost; a rest of it in a file
                # shipper read was shipped as a document of its own
                for path, size in pieces.items():
                    if path in keeper.deleted or path == next(iter(pieces)):
                        lost_in[path] += size
        given = total(metrics(pod), "shipper_bytes_given_up_total") - given_before
        lost = set(written) - shipped
        shipper_log.stop()
        said = collections.Counter(
            r["message"] for r in shipper_log.records() if r.get("level") in ("warning", "error")
        )
        assert deleted_during >= 2, f"the kubelet deleted {deleted_during} files in the outage"
        never = sorted(shipped - set(written))
        shown = set(never[:10])
        assert not never, (
            f"{len(never)} documents for lines the kept files do not hold (first {never[:10]}): "
            + "; ".join(
                f"{d['kubernetes']['pod']['name']} {d['message'][:50]!r} offset "
                f"{d['log'].get('offset')} flags {d['log'].get('flags')} "
                f"file {d['log']['file']['path'][-40:]}"
                for d in docs
                if (p := workload.parse(d["message"])) and (p[0], p[1]) in shown
            )[:3000]
        )
        assert set(lost_in) <= keeper.deleted, "lost lines in files the kubelet never deleted"
        ranges = {r.pod: number_ranges(sorted(r.seen)) for r in reports.values()}
        assert given == sum(lost_in.values()), (
            f"shipper_bytes_given_up_total grew by {given:.0f}; the lines missing from "
            f"Elasticsearch ({len(lost)} of {len(written)}) are {sum(lost_in.values())} bytes "
            f"in {len(lost_in)} of the {len(keeper.deleted)} files the kubelet deleted "
            f"(first {sorted(p.name for p in lost_in)[:3]}); shipped: {ranges}; "
            f"shipper's warnings: {dict(said)}; Elasticsearch answered again after {back:.0f}s, "
            f"shipper's sink was up after {sink_up:.0f}s"
        )
        problems = [r.describe() for r in reports.values() if r.doubled() or r.wrong]
        assert not problems, "\n".join(problems)
    finally:
        node.kubectl("delete", "namespace", ns, "--wait=true", timeout=300, check=False)
