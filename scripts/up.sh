#!/usr/bin/env bash
# `make up`: a node agent on this host, reconciling examples/agent/desired.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

export BPFLEET_AGENT_NODE_NAME="${BPFLEET_AGENT_NODE_NAME:-$(hostname)}"
export BPFLEET_AGENT_PIN_ROOT="${BPFLEET_AGENT_PIN_ROOT:-/sys/fs/bpf/bpfleet}"
export BPFLEET_AGENT_STATE_DIR="${BPFLEET_AGENT_STATE_DIR:-$PWD/.dev/agent}"
export BPFLEET_AGENT_DESIRED_STATE="${BPFLEET_AGENT_DESIRED_STATE:-$PWD/examples/agent/desired.yaml}"
export BPFLEET_AGENT_ARTIFACT_DIRS="${BPFLEET_AGENT_ARTIFACT_DIRS:-$PWD/bpf-catalog/build}"
export BPFLEET_AGENT_TRUST="${BPFLEET_AGENT_TRUST:-$PWD/.dev/keys/signing.pub}"

if [ "${1:-}" = "down" ]; then
  # An empty desired state: the agent detaches and unpins everything it owns.
  empty=$(mktemp)
  echo "programs: []" > "$empty"
  BPFLEET_AGENT_DESIRED_STATE="$empty" .venv/bin/bpfleet agent run --once >/dev/null
  rm -f "$empty"
  echo "bpfleet: detached everything under $BPFLEET_AGENT_PIN_ROOT"
  exit 0
fi

cat <<TXT
bpfleet agent on node $BPFLEET_AGENT_NODE_NAME
  desired state  $BPFLEET_AGENT_DESIRED_STATE   (edit it; the agent follows)
  artifacts      $BPFLEET_AGENT_ARTIFACT_DIRS (signed with .dev/keys)
  pins           $BPFLEET_AGENT_PIN_ROOT

In another shell:
  BPFLEET_AGENT_STATE_DIR=$BPFLEET_AGENT_STATE_DIR .venv/bin/bpfleet agent status
  bpftool link show
Ctrl-C stops the agent; programs stay attached. 'make down' detaches them.
TXT
exec .venv/bin/python -m bpfleet_agent
