"""A real kube-apiserver (with etcd) for tests, built from source and cached.

`kube_build/go.mod` pins k8s.io/kubernetes and points every k8s.io staging module at its
matching release, so `go build k8s.io/kubernetes/cmd/kube-apiserver` works through the
module proxy; etcd is built from go.etcd.io/etcd/server/v3 at the version Kubernetes
uses. Binaries are cached in `${SHIPPER_CACHE:-~/.cache/shipper}/kube/<version>` (a cold
build takes about ten minutes on two cores; later runs reuse it).

The server runs on loopback with TLS (a CA the tests trust), static tokens (an admin in
system:masters, and the user `shipper` that has nothing until RBAC grants it), an audit
log of every request at Metadata level (to count LIST and WATCH per user), and no
ServiceAccount admission (no controller creates default service accounts here). There is
no kubelet or scheduler: pods are created with spec.nodeName set and deleted with
grace period 0.

A watch resumed from a resourceVersion older than the apiserver's watch cache gets 410
Gone. The reliable way to cause that: stop the apiserver, change and compact etcd
(`compact_etcd`), start it again; its new watch cache begins at the current revision.

    python -m tests.harness.kube provision
    python -m tests.harness.kube start
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.elasticsearch import free_port

KUBE_VERSION = "v1.36.3"
BUILD_DIR = Path(__file__).resolve().parent / "kube_build"
ADMIN = "admin"
SHIPPER_USER = "shipper"


def cache_dir() -> Path:
    return Path(os.environ.get("SHIPPER_CACHE", Path.home() / ".cache" / "shipper"))


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("Go is needed to build kube-apiserver (scripts/setup.sh --kube)")
    return go


def go_env() -> dict[str, str]:
    """The environment of every harness Go build: one module and build cache, no cgo."""
    go_cache = cache_dir() / "go"
    return {
        **os.environ,
        "GOMODCACHE": str(go_cache / "mod"),
        "GOCACHE": str(go_cache / "build"),
        "GOPATH": str(go_cache / "path"),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        "CGO_ENABLED": "0",
    }


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock under the cache, so concurrent test runs build a thing once."""
    import fcntl

    path = cache_dir() / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def go_build(
    module: Path,
    packages: dict[str, str],
    target: Path,
    ldflags: str = "",
    tags: str = "",
) -> dict[str, Path]:
    """Build `packages` ({binary name: import path}) of the Go module in `module` into
    `target`, once: binaries already there are kept. The missing ones are built by one
    `go build` (so they share compiled packages) and moved in one by one."""
    out = {name: target / name for name in packages}
    if all(p.exists() for p in out.values()):
        return out
    with cache_lock(f"build-{target.name}-{target.parent.name}"):
        missing = {name: pkg for name, pkg in packages.items() if not out[name].exists()}
        if not missing:
            return out
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target))
        try:
            began = time.monotonic()
            print(
                f"building {', '.join(missing)} from {module.name}; the first build takes "
                "minutes...",
                file=sys.stderr,
                flush=True,
            )
            args = [_go(), "build", "-trimpath", f"-ldflags=-s -w {ldflags}".strip()]
            if tags:
                args.append(f"-tags={tags}")
            if len(missing) == 1:
                [(name, pkg)] = missing.items()
                args += ["-o", str(staging / name), pkg]
            else:
                # With several packages, -o names a directory and each binary is named
                # after the last element of its import path.
                args += ["-o", str(staging) + "/", *missing.values()]
            subprocess.run(args, cwd=module, env=go_env(), check=True)
            for name, pkg in missing.items():
                built = staging / (name if len(missing) == 1 else pkg.rstrip("/").split("/")[-1])
                os.replace(built, out[name])
            print(
                f"built {', '.join(missing)} in {time.monotonic() - began:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def kube_version_ldflags() -> str:
    return " ".join(
        f"-X k8s.io/component-base/version.{k}={v}"
        for k, v in (
            ("gitVersion", KUBE_VERSION),
            ("gitMajor", "1"),
            ("gitMinor", KUBE_VERSION.split(".")[1]),
        )
    )


def kube_bin_dir() -> Path:
    return cache_dir() / "kube" / KUBE_VERSION


def ensure_binaries() -> tuple[Path, Path]:
    """(etcd, kube-apiserver), built once from the Go module proxy."""
    target = kube_bin_dir()
    apiserver = go_build(
        BUILD_DIR,
        {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver"},
        target,
        kube_version_ldflags(),
    )["kube-apiserver"]
    etcd = go_build(BUILD_DIR, {"etcd": "go.etcd.io/etcd/server/v3"}, target)["etcd"]
    return etcd, apiserver


NODE_COMMANDS = {
    name: f"k8s.io/kubernetes/cmd/{name}"
    for name in ("kubelet", "kube-controller-manager", "kube-scheduler", "kubectl")
}


def ensure_node_binaries() -> dict[str, Path]:
    """etcd, kube-apiserver and the rest of a node (kubelet, controller-manager,
    scheduler, kubectl), all from the same pinned k8s.io/kubernetes."""
    etcd, apiserver = ensure_binaries()
    built = go_build(BUILD_DIR, NODE_COMMANDS, kube_bin_dir(), kube_version_ldflags())
    return {"etcd": etcd, "kube-apiserver": apiserver, **built}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class KubeApiServer:
    """etcd + kube-apiserver on loopback; the apiserver can be stopped and started alone."""

    def __init__(
        self,
        workdir: Path,
        address: str = "127.0.0.1",
        node: str | None = None,
        tokens: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """`node`: serve a kubelet of that name (Node,RBAC authorization, NodeRestriction,
        ServiceAccount admission, a client certificate for the kubelet API, a serving
        certificate for it); `tokens`: more static users, {token: (user, groups)}."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_bin, self.apiserver_bin = ensure_binaries()
        self.address = address
        self.node = node
        self.extra_tokens = dict(tokens or {})
        self.port = free_port()
        self.etcd_port = free_port()
        self.peer_port = free_port()
        self.url = f"https://{address}:{self.port}"
        self.token = base64.b32encode(os.urandom(20)).decode().lower()
        self.shipper_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.ca_path = self.workdir / "ca.crt"
        self.audit_log_path = self.workdir / "audit.log"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._write_files()
        self.kubeconfig_path = self.kubeconfig_for(self.token, "admin")

    def _sign(self, name: str, subject: str, sans: str = "") -> None:
        """`name`.key and `name`.crt, signed by the test CA."""
        d = self.workdir
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d,
        )  # fmt: skip
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\n" if sans else "basicConstraints=CA:FALSE\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.crt", cwd=d,
        )  # fmt: skip

    def _write_files(self) -> None:
        d = self.workdir
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shipper-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            cwd=d,
        )
        sans = ["IP:127.0.0.1", "DNS:localhost"]
        if self.address != "127.0.0.1":
            sans.append(f"IP:{self.address}")
        if self.node is not None:
            sans += ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc"]
            sans.append("IP:10.96.0.1")  # the `kubernetes` Service of the cluster IP range
        self._sign("server", "/CN=kube-apiserver", ",".join(sans))
        if self.node is not None:
            # The apiserver's identity towards the kubelet (logs, exec); the kubelet's own
            # serving certificate, verified by the apiserver.
            self._sign("kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
            self._sign(
                "kubelet-server",
                f"/CN={self.node}",
                f"IP:{self.address},IP:127.0.0.1,DNS:{self.node}",
            )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        lines = [
            f'{self.token},{ADMIN},1,"system:masters"',
            f"{self.shipper_token},{SHIPPER_USER},2",
        ]
        for n, (token, (user, groups)) in enumerate(self.extra_tokens.items(), start=3):
            lines.append(f'{token},{user},{n},"{groups}"')
        (d / "tokens.csv").write_text("\n".join(lines) + "\n")
        (d / "audit-policy.yaml").write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n  - level: Metadata\n"
        )

    def kubeconfig_for(self, token: str, name: str = "user") -> Path:
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": self.url,
                                "certificate-authority": str(self.ca_path),
                            },
                        }
                    ],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
                    "current-context": "test",
                }
            )
        )
        return path

    # ---- processes -------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        if self._etcd is None or self._etcd.poll() is not None:
            self._start_etcd(timeout)
        self.start_apiserver(timeout)

    def _start_etcd(self, timeout: float) -> None:
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.peer_port}"
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - the child owns it
        self._etcd = subprocess.Popen(
            [
                str(self.etcd_bin),
                "--name",
                "default",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"default={peer}",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait(
            lambda: self._etcd_request("/health").get("health") == "true",
            timeout,
            "etcd",
            self.workdir / "etcd.log",
            self._etcd,
        )

    def start_apiserver(self, timeout: float = 120) -> None:
        d = self.workdir
        log = open(d / "apiserver.log", "ab")  # noqa: SIM115 - the child owns it
        self._apiserver = subprocess.Popen(
            [
                str(self.apiserver_bin),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={d / 'server.crt'}",
                f"--tls-private-key-file={d / 'server.key'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log_path}",
                "--audit-log-mode=blocking",
                *self._mode_args(),
                "--v=1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            with contextlib.suppress(OSError, ValueError):
                return self.get("/readyz")[0] == 200
            return False

        self._wait(ready, timeout, "kube-apiserver", d / "apiserver.log", self._apiserver)

    def _mode_args(self) -> list[str]:
        d = self.workdir
        if self.node is None:
            # No controller creates default service accounts here.
            return ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={d / 'kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'kubelet-client.key'}",
            f"--kubelet-certificate-authority={d / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=false",
        ]

    def stop_apiserver(self) -> None:
        _terminate(self._apiserver)
        self._apiserver = None

    def stop(self) -> None:
        self.stop_apiserver()
        _terminate(self._etcd)
        self._etcd = None

    @staticmethod
    def _wait(
        predicate: Any, timeout: float, what: str, log: Path, proc: subprocess.Popen[bytes]
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{_tail(log)}")
            with contextlib.suppress(OSError, ValueError):
                if predicate():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout}s:\n{_tail(log)}")

    # ---- requests ------------------------------------------------------------------------

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        import ssl

        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {token or self.token}"}
        )
        context = ssl.create_default_context(cafile=str(self.ca_path))
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api_client(self, token: str | None = None) -> Any:
        """A kubernetes ApiClient, as the admin unless another token is given."""
        from kubernetes import config

        path = self.kubeconfig_path if token is None else self.kubeconfig_for(token, "client")
        return config.new_client_from_config(config_file=str(path))

    def _etcd_request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}{path}", data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (older revisions are gone); return it."""
        revision = int(self._etcd_request("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        self._etcd_request("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # ---- audit ---------------------------------------------------------------------------

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log_path.exists():
            return []
        out = []
        for line in self.audit_log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def request_counts(self, user: str | None = None) -> collections.Counter[tuple[str, str]]:
        """(verb, resource) -> requests, from the audit log (ResponseStarted for watches)."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for event in self.audit_events():
            if user is not None and event.get("user", {}).get("username") != user:
                continue
            verb = event.get("verb", "")
            stage = event.get("stage")
            if (verb == "watch" and stage != "ResponseStarted") or (
                verb != "watch" and stage != "ResponseComplete"
            ):
                continue
            resource = event.get("objectRef", {}).get("resource", event.get("requestURI", ""))
            counts[(verb, resource)] += 1
        return counts


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tail(path: Path, n: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# ---- helpers for tests -----------------------------------------------------------------------


def grant_shipper_read(api: Any) -> None:
    """The RBAC of deploy/kubernetes/rbac.yaml, bound to the static user `shipper`."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(api)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "shipper-test"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "namespaces"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "shipper-test"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "shipper-test",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": SHIPPER_USER}
        ],
    }
    with contextlib.suppress(client.ApiException):
        rbac.create_cluster_role(role)
    with contextlib.suppress(client.ApiException):
        rbac.create_cluster_role_binding(binding)


def create_namespace(api: Any, name: str, labels: dict[str, str] | None = None) -> None:
    from kubernetes import client

    client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})


def create_pod(
    api: Any,
    ns: str,
    name: str,
    node: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: tuple[tuple[str, str], ...] = (("app", "busybox:1.36"),),
    owner: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A pod bound to `node` (no scheduler), with a realistic owner reference."""
    from kubernetes import client

    meta: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
    if owner is not None:
        kind, owner_name = owner
        api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
        meta["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, owner_name)),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": c, "image": image} for c, image in containers],
        },
    }
    created = client.CoreV1Api(api).create_namespaced_pod(ns, body)
    return api.sanitize_for_serialization(created)


def set_pod_status(
    api: Any, ns: str, name: str, pod_ip: str, container_ids: dict[str, str]
) -> None:
    """What a kubelet would report: phase, IP, container ids."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    pod = core.read_namespaced_pod(name, ns)
    images = {c.name: c.image for c in pod.spec.containers}
    status = {
        "status": {
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "containerStatuses": [
                {
                    "name": c,
                    "containerID": cid,
                    "image": images.get(c, ""),
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-03-01T10:00:00Z"}},
                }
                for c, cid in container_ids.items()
            ],
        }
    }
    core.patch_namespaced_pod_status(name, ns, status)


def patch_pod_labels(api: Any, ns: str, name: str, labels: dict[str, str]) -> None:
    from kubernetes import client

    client.CoreV1Api(api).patch_namespaced_pod(name, ns, {"metadata": {"labels": labels}})


def delete_pod_now(api: Any, ns: str, name: str) -> None:
    """Delete at once: with no kubelet a bound pod would otherwise stay Terminating."""
    from kubernetes import client

    client.CoreV1Api(api).delete_namespaced_pod(name, ns, grace_period_seconds=0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.kube")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="build and cache kube-apiserver and etcd")
    sub.add_parser("start", help="run etcd and kube-apiserver in the foreground")
    args = parser.parse_args()
    if args.command == "provision":
        began = time.monotonic()
        etcd, apiserver = ensure_binaries()
        print(
            f"kube-apiserver {KUBE_VERSION}: {apiserver}\netcd: {etcd} "
            f"({time.monotonic() - began:.1f}s)"
        )
        return
    server = KubeApiServer(Path(tempfile.mkdtemp(prefix="shipper-kube-")))
    server.start()
    print(f"{server.url}\nkubeconfig: {server.kubeconfig_path}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
