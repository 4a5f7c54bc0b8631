"""Helm and promtool for the deploy tests, built from the Go module proxy and cached.

Each has a module of its own (helm_build/, promtool_build/: its go.mod pins the version)
and is built by `kube.go_build` into `${SHIPPER_CACHE}/tools/<name>-<version>`. promtool is
built with `remove_all_sd` (no service discovery plugins: checking and unit-testing
rules needs none, and the build is a fraction of the full one).

    python -m tests.harness.tools provision
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from tests.harness.kube import cache_dir, go_build

HERE = Path(__file__).resolve().parent
HELM_BUILD = HERE / "helm_build"
PROMTOOL_BUILD = HERE / "promtool_build"


def _pinned(module_dir: Path, module: str) -> str:
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v[^\s/]+)", text, re.M)
    if match is None:
        raise RuntimeError(f"{module} is not required in {module_dir / 'go.mod'}")
    return match.group(1)


def ensure_helm() -> Path:
    version = _pinned(HELM_BUILD, "helm.sh/helm/v3")
    # As Helm's Makefile does: the default Kubernetes version of `helm template` and
    # `helm lint` is the one of the client-go it is built with.
    minor = _pinned(HELM_BUILD, "k8s.io/client-go").split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags.append(f"-X helm.sh/helm/v3/{package}.k8sVersionMajor=1")
        flags.append(f"-X helm.sh/helm/v3/{package}.k8sVersionMinor={minor}")
    return go_build(
        HELM_BUILD,
        {"helm": "helm.sh/helm/v3/cmd/helm"},
        cache_dir() / "tools" / f"helm-{version}",
        " ".join(flags),
    )["helm"]


def ensure_promtool() -> Path:
    version = _pinned(PROMTOOL_BUILD, "github.com/prometheus/prometheus")
    return go_build(
        PROMTOOL_BUILD,
        {"promtool": "github.com/prometheus/prometheus/cmd/promtool"},
        cache_dir() / "tools" / f"promtool-{version}",
        tags="remove_all_sd",
    )["promtool"]


def main() -> None:
    if sys.argv[1:] != ["provision"]:
        raise SystemExit("usage: python -m tests.harness.tools provision")
    for ensure in (ensure_helm, ensure_promtool):
        began = time.monotonic()
        print(f"{ensure()} ({time.monotonic() - began:.1f}s)")


if __name__ == "__main__":
    main()
