#!/usr/bin/env bash
# The whole test suite, after all set-up: lint, every test against the newest
# Elasticsearch 9 (and a real kube-apiserver, a real 3-node cluster, OpenSearch 2.19 and
# 3.x: the `opensearch` tests run once per version in SHIPPER_OS_VERSIONS, and a real node
# with shipper installed by Helm and kustomize: tests/node, as root), then the
# Elasticsearch tests again against the newest 8.x (the client's compatibility; the node
# tests once are enough). Extra arguments go to the first pytest run.
#   SHIPPER_CHAOS=full   run the full fault-injection suite instead of its short version
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --kube

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest (Elasticsearch ${SHIPPER_ES_VERSION:-9.5.3}, OpenSearch ${SHIPPER_OS_VERSIONS:-2.19.6,3.8.0})" >&2
.venv/bin/pytest "$@"

echo "== pytest -m elasticsearch (Elasticsearch 8.19.21: client compatibility)" >&2
SHIPPER_ES_VERSION=8.19.21 .venv/bin/pytest -m "elasticsearch and not chaos and not node" -q
