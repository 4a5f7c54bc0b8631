#!/usr/bin/env bash
# The demo: a local Elasticsearch, a generated node log tree, `shipper run --once` into it,
# and what landed. KEEP=1 leaves Elasticsearch running to explore.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
