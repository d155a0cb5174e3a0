#!/usr/bin/env bash
# `make up`: the platform on this host (API, worker, Redis, three agents, the GitOps
# pipeline following .dev/fleet-repo), until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/bpfleet local up "$@"
