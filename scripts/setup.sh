#!/usr/bin/env bash
# Everything the demo and the tests need, on a fresh Debian machine; idempotent and quick
# when already done. Downloads are cached in ${SHIPPER_CACHE:-~/.cache/shipper}.
#   scripts/setup.sh            python environment + Elasticsearch and OpenSearch test
#                               distributions (and a Java for each)
#   scripts/setup.sh --kube     ... + a test node: kube-apiserver, etcd, kubelet, controller-
#                               manager, scheduler, kubectl, helm and promtool built from
#                               source; containerd, runc, CNI plugins, buildah and debootstrap
#                               from Debian; the pause, writer and shipper images
set -euo pipefail
cd "$(dirname "$0")/.."

want_kube=0
for arg in "$@"; do
  case "$arg" in
    --kube) want_kube=1 ;;
    *) echo "usage: scripts/setup.sh [--kube]" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s\n' "$*" >&2; }

# System packages: nginx and openssl (TLS tests), maven (Elasticsearch download; a direct
# download is the fallback), go (kube-apiserver build). Only what is missing is installed.
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v mvn >/dev/null || missing+=(maven)
if [ "$want_kube" = 1 ] && ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  missing+=(golang-go)
fi
if [ "$want_kube" = 1 ]; then
  # The test node (tests/harness/node): runtime, CNI plugins, image tools, iptables (the
  # kubelet's canary chains), iproute2 (the bridge).
  for pkg in containerd runc containernetworking-plugins buildah debootstrap iptables iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  step "installing shipper and its test dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test,bench]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

step "Elasticsearch and OpenSearch test distributions"
.venv/bin/python -m tests.harness.elasticsearch provision

if [ "$want_kube" = 1 ]; then
  step "kube-apiserver and etcd"
  .venv/bin/python -m tests.harness.kube provision
  step "the test node: kubelet, controller-manager, scheduler, kubectl, helm, promtool, images"
  .venv/bin/python -m tests.harness.node provision
fi
