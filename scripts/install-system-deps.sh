#!/usr/bin/env bash
# Installs the Debian packages bpfleet builds, runs and tests with; quick when all are
# present. Every program the project or its tests run, and every header they include,
# comes from a package named here: a minimal Debian image has none of them
# (scripts/test-in-debian-root.sh checks that on an image with nothing else).
#
#   scripts/install-system-deps.sh [images]         install what is missing (needs root)
#   scripts/install-system-deps.sh --list [images]  print the package names, one a line
#
# `images` names the packages that build the container images instead (`make images`).
set -euo pipefail

packages=(
  clang llvm bpftool              # compile CO-RE objects, strip DWARF, cross-check the analyser
  libbpf1 libbpf-dev              # the agent's libbpf; its headers (bpf_helpers.h, option structs)
  linux-libc-dev libc6-dev        # <linux/bpf.h>, <asm/types.h>; libc headers for the ABI checks
  iproute2 iptables procps        # namespaces, veths, bridges; the iptables peer; sysctl
  mount                           # mount/umount: bpffs and tracefs where they are missing
  make git openssl openssh-client # build, GitOps sources, signature interoperability
  openssh-server                  # a Git-over-SSH remote for the GitOps tests (run on a test port only)
  curl                            # the post-commit hook `make up` installs in the fleet repository
  strace                          # proves no bpf() load happens for refused artifacts
  redis-server postgresql         # the API's broker and production database, tested for real
  python3 python3-venv            # the project's .venv
  chromium                        # the dashboard's browser tests (driven by Playwright)
)

# What `make images` needs besides git and python3: nothing of it runs in the images.
image_packages=(
  buildah                         # builds the images from images/Containerfile, runs them in tests
  mmdebstrap                      # the Debian base the images build on, made from Debian's packages
)

list=0
if [[ ${1:-} == --list ]]; then
  list=1
  shift
fi
case ${1:-} in
  "") ;;
  images) packages=("${image_packages[@]}") ;;
  *) echo "install-system-deps: unknown group '$1' (known: images)" >&2; exit 2 ;;
esac
if ((list)); then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

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
