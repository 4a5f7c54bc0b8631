"""containerd's configuration for the test node, and the CNI network it gives pods.

Its own root, state, socket and plugin directories (never the machine's /run/containerd
or /var/lib/containerd); the CRI plugin with overlayfs and runc on cgroupfs
(`SystemdCgroup = false`), `restrict_oom_score_adj = true` (root here lacks
CAP_SYS_RESOURCE: without it runc fails with "can't get final child's PID from pipe"),
network namespaces under its state directory. The CNI network: the bridge plugin on the
harness's bridge with host-local IPAM (state in the work directory) and portmap.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness.node import host


def write_config(c: Path, socket: Path, cni_dir: Path, subnet: str, sandbox_image: str) -> Path:
    """Write `c`/config.toml and the CNI conflist; return the config's path."""
    for sub in ("root", "state", "opt"):
        (c / sub).mkdir(parents=True, exist_ok=True)
    (cni_dir / "net.d").mkdir(parents=True, exist_ok=True)
    (cni_dir / "net.d" / "10-shipper.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "shipper-test",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": host.BRIDGE,
                        # No gateway, no NAT, no forwarding: pods reach the bridge
                        # address (on-link) and nothing beyond this machine.
                        "isGateway": False,
                        "ipMasq": False,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": subnet}]],
                            "dataDir": str(cni_dir / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            }
        )
    )
    (c / "config.toml").write_text(
        f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: runc must not lower an oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir / "net.d"}"
"""
    )
    return c / "config.toml"
