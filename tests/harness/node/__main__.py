"""python -m tests.harness.node provision | start"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.kube import ensure_node_binaries
from tests.harness.node import images
from tests.harness.tools import ensure_helm, ensure_promtool


def provision() -> None:
    for what, ensure in (
        ("kube binaries", ensure_node_binaries),
        ("helm", ensure_helm),
        ("promtool", ensure_promtool),
        ("pause and writer images", images.small_images),
        ("debian base", images.debian_rootfs),
        ("shipper image", images.shipper_image),
    ):
        began = time.monotonic()
        ensure()
        print(f"{what}: ready ({time.monotonic() - began:.1f}s)", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.node")
    parser.add_argument("command", choices=["provision", "start"])
    args = parser.parse_args()
    if args.command == "provision":
        provision()
        return
    from tests.harness.node.cluster import KubeNode

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    node = KubeNode(Path(tempfile.mkdtemp(prefix="shipper-node-")))
    node.start()
    assert node.api is not None
    print(f"node {node.workdir}\nkubeconfig: {node.api.kubeconfig_path}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        print("residue:", node.residue() or "none")


if __name__ == "__main__":
    main()
