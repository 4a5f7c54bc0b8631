"""A real single-node Kubernetes cluster on the test machine.

etcd and kube-apiserver (tests/harness/kube.py, in node mode), kube-controller-manager,
kube-scheduler, containerd (root, state, socket and config of its own; CRI plugin,
overlayfs, runc with cgroupfs) with the bridge, host-local and portmap CNI plugins, and a
kubelet. Everything lives in one work directory: the kubelet's root dir and pod logs
(`podLogsDir`), containerd's state, the CNI config and IPAM state. Only the kubelet's
`/var/log/containers` links are fixed in the kubelet; they point into the work directory.

The pod network is a bridge (`shipper0`, 10.88.0.0/24) with no gateway route and no NAT:
pods reach the host's bridge address 10.88.0.1 (the apiserver, and whatever a test binds
there, such as Elasticsearch's HTTP port) and nothing else.

One node per machine at a time (a lock); `stop` deletes every pod through the API, stops
the kubelet and containerd, and undoes what is left on the host (host.HostSnapshot).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.harness.elasticsearch import free_port
from tests.harness.kube import KubeApiServer, _terminate, ensure_node_binaries
from tests.harness.node import containerd, host, images

NODE_NAME = "shipper-node"
NODE_IP = "10.88.0.1"
POD_SUBNET = "10.88.0.0/24"
LOCK = Path("/run/shipper-test-node.lock")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _token() -> str:
    return base64.b32encode(os.urandom(20)).decode().lower()


def _tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


class KubeNode:
    """The cluster; `kubectl(...)`, `api_client()` and `logs_dir` for tests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bins = ensure_node_binaries()
        self.images = images.small_images()
        self.shipper_image, self.shipper_archive = images.shipper_image()
        self.kubelet_token, self.kcm_token, self.scheduler_token = _token(), _token(), _token()
        self.containerd_dir = self.workdir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubelet_dir = self.workdir / "kubelet"
        self.logs_dir = self.workdir / "pods"  # podLogsDir
        self.cni_dir = self.workdir / "cni"
        self.kubelet_port = free_port()
        self.healthz_port = free_port()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock_fh: Any = None
        self.snapshot: host.HostSnapshot | None = None
        self.api: KubeApiServer | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._lock_fh = open(LOCK, "w")  # noqa: SIM115 - held while the node runs
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another test node runs on this machine ({LOCK})") from None
        self.snapshot = host.HostSnapshot.take()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._bridge()
        self.api = KubeApiServer(
            self.workdir / "api",
            address=NODE_IP,
            node=NODE_NAME,
            tokens={
                self.kubelet_token: (f"system:node:{NODE_NAME}", "system:nodes"),
                self.kcm_token: ("system:kube-controller-manager", ""),
                self.scheduler_token: ("system:kube-scheduler", ""),
            },
        )
        self.api.start()
        self._start_controllers()
        self._start_containerd()
        for archive in [*self.images.values(), self.shipper_archive]:
            self.ctr("image", "import", "--snapshotter", "overlayfs", str(archive))
        self._start_kubelet()
        self.wait_until(self._node_ready, 120, "the node to be Ready", "kubelet")
        self.wait_until(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            "the default service account",
            "kube-controller-manager",
        )

    def stop(self) -> None:
        """Every pod deleted through the API, then the processes, then the host put back."""
        if self.api is not None and self._procs.get("kubelet") is not None:
            with contextlib.suppress(Exception):
                self.delete_all_pods()
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
            _terminate(self._procs.pop(name, None))
        if "containerd" in self._procs:
            with contextlib.suppress(Exception):
                self._remove_containers()
            _terminate(self._procs.pop("containerd"))
        self._kill_shims()
        if self.api is not None:
            self.api.stop()
        if self.snapshot is not None:
            self.snapshot.restore(self.workdir)
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def residue(self) -> list[str]:
        assert self.snapshot is not None
        return self.snapshot.residue(self.workdir) + [
            f"process {pid}" for pid in self._our_processes()
        ]

    # ---- pieces ------------------------------------------------------------------------

    def _bridge(self) -> None:
        if host.BRIDGE in host.links():
            subprocess.run(["ip", "link", "delete", host.BRIDGE], check=True)
        subprocess.run(["ip", "link", "add", host.BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", host.BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", host.BRIDGE, "up"], check=True)

    def _kubeconfig(self, name: str, token: str) -> Path:
        assert self.api is not None
        return self.api.kubeconfig_for(token, name)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs[name] = proc
        return proc

    def _start_controllers(self) -> None:
        assert self.api is not None
        d = self.api.workdir
        kcm = self._kubeconfig("kube-controller-manager", self.kcm_token)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bins["kube-controller-manager"]),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                "--controllers=*,-nodeipam,-service,-route,-cloud-node-lifecycle",
                "--v=1",
            ],
        )
        scheduler = self._kubeconfig("kube-scheduler", self.scheduler_token)
        self._spawn(
            "kube-scheduler",
            [
                str(self.bins["kube-scheduler"]),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_containerd(self) -> None:
        c = self.containerd_dir
        containerd.write_config(c, self.socket, self.cni_dir, POD_SUBNET, images.PAUSE_IMAGE)
        proc = self._spawn(
            "containerd", ["containerd", "--config", str(c / "config.toml"), "--log-level", "warn"]
        )

        def up() -> bool:
            return (
                self.socket.exists()
                and subprocess.run(self._ctr_args("version"), capture_output=True).returncode == 0
            )

        self.wait_until(up, 60, "containerd", "containerd", proc)

    def _ctr_args(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]

    def ctr(self, *args: str) -> str:
        result = subprocess.run(self._ctr_args(*args), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _start_kubelet(self) -> None:
        assert self.api is not None
        d = self.api.workdir
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        host.make_cgroup_root()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{host.CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "tlsCertFile": str(d / "kubelet-server.crt"),
            "tlsPrivateKeyFile": str(d / "kubelet-server.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(d / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.logs_dir),
            "containerLogMaxSize": "1Mi",
            "containerLogMaxFiles": 3,
            "containerLogMonitorInterval": "3s",
            "failSwapOn": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
        }
        (self.kubelet_dir / "config.yaml").write_text(json.dumps(config))
        kubeconfig = self._kubeconfig("kubelet", self.kubelet_token)
        self._spawn(
            "kubelet",
            [
                str(self.bins["kubelet"]),
                f"--config={self.kubelet_dir / 'config.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_dir}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _node_ready(self) -> bool:
        result = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_until(
        self,
        predicate: Any,
        timeout: float,
        what: str,
        log: str,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        proc = proc or self._procs.get(log)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{log} exited:\n{_tail(self.workdir / f'{log}.log')}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                if predicate():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"no {what} after {timeout}s:\n{_tail(self.workdir / f'{log}.log')}")

    # ---- teardown ------------------------------------------------------------------------

    def delete_all_pods(self, timeout: float = 120) -> None:
        """Workloads and pods everywhere, through the API, so the kubelet tears every
        sandbox down (network included) as it would on a real node."""
        result = self.kubectl("get", "namespaces", "-o", "name", check=False)
        for ns in result.stdout.split():
            name = ns.split("/", 1)[1]
            if name not in SYSTEM_NAMESPACES:
                self.kubectl("delete", "namespace", name, "--wait=false", check=False)
        for ns in SYSTEM_NAMESPACES:
            self.kubectl("-n", ns, "delete", "daemonsets,deployments,replicasets,jobs,pods",
                         "--all", "--wait=false", check=False)  # fmt: skip

        def gone() -> bool:
            out = self.kubectl("get", "pods", "-A", "-o", "name", check=False)
            return out.returncode == 0 and not out.stdout.strip()

        self.wait_until(gone, timeout, "pods to be deleted", "kubelet")

    def _remove_containers(self) -> None:
        for cid in self.ctr("containers", "list", "-q").split():
            for args in (
                ("task", "kill", "-s", "SIGKILL", cid),
                ("task", "delete", "-f", cid),
                ("containers", "delete", cid),
            ):
                subprocess.run(self._ctr_args(*args), capture_output=True)

    def _our_processes(self) -> list[int]:
        """Processes (containerd shims and what they run) started for this node."""
        marks = (str(self.socket).encode(), str(self.workdir).encode())
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                out.append(int(entry.name))
        return out

    def _kill_shims(self) -> None:
        for pid in self._our_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._our_processes() and time.monotonic() < deadline:
            time.sleep(0.1)

    # ---- for tests -----------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        assert self.api is not None
        result = subprocess.run(
            [str(self.bins["kubectl"]), f"--kubeconfig={self.api.kubeconfig_path}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def apply(self, docs: list[dict[str, Any]] | str) -> None:
        text = docs if isinstance(docs, str) else "\n---\n".join(json.dumps(d) for d in docs)
        self.kubectl("apply", "-f", "-", input=text)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def api_client(self) -> Any:
        assert self.api is not None
        return self.api.api_client()

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def clean_logs_dir(self) -> None:
        """Forget the pod log directories the kubelet has not removed yet."""
        shutil.rmtree(self.logs_dir, ignore_errors=True)
