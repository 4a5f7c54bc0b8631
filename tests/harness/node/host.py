"""What a node changes on the host, and putting it back.

A snapshot before the node starts records mounts, network interfaces, iptables rules,
the sysctls the kubelet tunes, and the host paths the kubelet and CNI write outside their
configured directories (/var/log/containers, /var/lib/cni). `restore` undoes the
difference; `residue` lists what is still different (a test asserts it is empty).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = "shipper-node"  # kubelet cgroupRoot: every pod cgroup lives under it
BRIDGE = "shipper0"
# The kubelet sets these at start (setupKernelTunables); a shared machine gets them back.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
TABLES = ("filter", "nat", "mangle", "raw")
CONTAINER_LINKS = Path("/var/log/containers")  # fixed in the kubelet
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache, fixed in containerd 1.6
POD_LOGS = Path("/var/log/pods")  # the kubelet's default; the node sets podLogsDir instead


def mounts() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        out.append(point.encode().decode("unicode_escape"))
    return out


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def iptables_rules() -> dict[tuple[str, str], list[str]]:
    """{(command, table): ['-N CHAIN' and '-A ...' lines]}; empty where iptables is absent."""
    out: dict[tuple[str, str], list[str]] = {}
    for command in ("iptables", "ip6tables"):
        for table in TABLES:
            try:
                result = subprocess.run(
                    [command, "-w", "-t", table, "-S"], capture_output=True, text=True, timeout=30
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if result.returncode == 0:
                out[(command, table)] = result.stdout.splitlines()
    return out


def sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_dirs() -> list[Path]:
    """Our cgroupRoot in every cgroup v1 hierarchy (or the v2 tree)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / CGROUP_ROOT]
    return [p / CGROUP_ROOT for p in sorted(base.iterdir()) if p.is_dir() and not p.is_symlink()]


def make_cgroup_root() -> None:
    """The kubelet refuses a cgroupRoot that does not exist; cpuset needs its cpus/mems."""
    for path in cgroup_dirs():
        path.mkdir(exist_ok=True)
        if path.parent.name == "cpuset":
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text((path.parent / name).read_text())


def remove_cgroups() -> list[str]:
    """rmdir our cgroup tree, leaves first; what could not be removed."""
    left = []
    for root in cgroup_dirs():
        if not root.exists():
            continue
        for directory, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
            try:
                os.rmdir(directory)
            except OSError as exc:
                left.append(f"{directory}: {exc.strerror}")
    return left


@dataclass
class HostSnapshot:
    mounts: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    iptables: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    sysctls: dict[str, str | None] = field(default_factory=dict)
    container_links: set[str] | None = None  # None: the directory did not exist
    cni_cache: set[str] | None = None
    pod_logs: set[str] | None = None

    @classmethod
    def take(cls) -> HostSnapshot:
        def listing(path: Path) -> set[str] | None:
            if not path.exists():
                return None
            return {str(p.relative_to(path)) for p in path.rglob("*")}

        return cls(
            mounts=set(mounts()),
            links=links(),
            iptables=iptables_rules(),
            sysctls={name: sysctl(name) for name in SYSCTLS},
            container_links=listing(CONTAINER_LINKS),
            cni_cache=listing(CNI_CACHE),
            pod_logs=listing(POD_LOGS),
        )

    def restore(self, workdir: Path) -> None:
        """Undo what the node left: mounts under `workdir`, cgroups, interfaces, rules,
        sysctls, kubelet links and CNI cache entries."""
        inside = str(workdir.resolve()) + "/"
        for point in sorted(set(mounts()) - self.mounts, key=len, reverse=True):
            if (
                point.startswith(inside)
                and subprocess.run(["umount", point], capture_output=True).returncode != 0
            ):
                subprocess.run(["umount", "-l", point], capture_output=True)
        remove_cgroups()
        for name in links() - self.links:
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
        self._restore_iptables()
        for name, value in self.sysctls.items():
            if value is not None and sysctl(name) != value:
                with contextlib.suppress(OSError):
                    (Path("/proc/sys") / name.replace(".", "/")).write_text(value)
        self._restore_tree(CONTAINER_LINKS, self.container_links)
        self._restore_tree(CNI_CACHE, self.cni_cache)
        self._restore_tree(POD_LOGS, self.pod_logs)

    def _restore_iptables(self) -> None:
        now = iptables_rules()
        for (command, table), rules in now.items():
            before = set(self.iptables.get((command, table), []))
            added = [r for r in rules if r not in before]
            for rule in added:
                if rule.startswith("-A "):
                    args = ["-D", *shlex.split(rule[3:])]
                    subprocess.run([command, "-w", "-t", table, *args], capture_output=True)
            for rule in added:
                if rule.startswith("-N "):
                    chain = rule.split()[1]
                    subprocess.run([command, "-w", "-t", table, "-F", chain], capture_output=True)
                    subprocess.run([command, "-w", "-t", table, "-X", chain], capture_output=True)

    @staticmethod
    def _restore_tree(path: Path, before: set[str] | None) -> None:
        if not path.exists():
            return
        for p in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
            if before is None or str(p.relative_to(path)) not in before:
                if p.is_dir() and not p.is_symlink():
                    with contextlib.suppress(OSError):
                        p.rmdir()
                else:
                    p.unlink(missing_ok=True)
        if before is None:
            with contextlib.suppress(OSError):
                path.rmdir()

    def residue(self, workdir: Path) -> list[str]:
        """What is still different from the snapshot (empty when the host is clean)."""
        out = []
        inside = str(workdir.resolve()) + "/"
        out += [f"mount {m}" for m in set(mounts()) - self.mounts if m.startswith(inside)]
        out += [f"cgroup {p}" for p in cgroup_dirs() if p.exists()]
        out += [f"interface {name}" for name in links() - self.links]
        now = iptables_rules()
        for key, rules in now.items():
            before = set(self.iptables.get(key, []))
            out += [f"{key[0]} -t {key[1]} {r}" for r in rules if r not in before]
        for name, value in self.sysctls.items():
            if sysctl(name) != value:
                out.append(f"sysctl {name}={sysctl(name)} (was {value})")
        taken = HostSnapshot.take()
        for path, before, after in (
            (CONTAINER_LINKS, self.container_links, taken.container_links),
            (CNI_CACHE, self.cni_cache, taken.cni_cache),
            (POD_LOGS, self.pod_logs, taken.pod_logs),
        ):
            if after is not None and (before is None or after - before):
                out.append(f"{path}: {sorted(after - (before or set()))[:5]}")
        return out
