#!/usr/bin/env bash
# Installs the Debian packages bpfleet builds and tests with; quick when all are present.
set -euo pipefail

packages=(
  clang llvm libbpf-dev bpftool   # compile CO-RE objects, strip DWARF, cross-check the analyser
  iproute2 iptables               # network namespaces, veth pairs, the iptables peer in benchmarks
  make git openssl openssh-client # build, GitOps sources, signature interoperability
  openssh-server                  # a Git-over-SSH remote for the GitOps tests (run on a test port only)
  strace                          # proves no bpf() load happens for refused artifacts
  redis-server postgresql         # the API's broker and production database, tested for real
  chromium                        # the dashboard's browser tests (driven by Playwright)
  python3-venv
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
