# Minimal Debian roots made with mmdebstrap, for the scripts that source this file:
# test-in-debian-root.sh (a root directory to run the tests in) and build-images.sh (the
# images' base, as a tarball). A root is never patched in place: it is rebuilt whole
# when the text describing what it should hold (release, variant, packages, options)
# differs from the one it was built from, and swapped in only once complete.
#
# BPFLEET_DEBIAN_MIRROR picks another mirror (default http://deb.debian.org).

DEBIAN_MIRROR=${BPFLEET_DEBIAN_MIRROR:-http://deb.debian.org}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# debian_codename RELEASE: 12 or bookworm -> bookworm, 13 or trixie -> trixie.
debian_codename() {
  case $1 in
    12|bookworm) echo bookworm ;;
    13|trixie) echo trixie ;;
    *) return 1 ;;
  esac
}

# debian_root_current OUTPUT STAMP WANTED: OUTPUT exists and was built from WANTED.
debian_root_current() {
  [[ -e $1 && -f $2 && $(cat "$2") == "$3" ]]
}

# debian_root_build CODENAME OUTPUT STAMP WANTED LOG [mmdebstrap options...]
# Builds OUTPUT (a directory, or a tarball when it ends in .tar) from the release's main,
# updates and security archives, then writes WANTED to STAMP. Built beside OUTPUT and
# moved into place at the end: a failed build leaves no half root behind.
debian_root_build() {
  local codename=$1 output=$2 stamp=$3 wanted=$4 log=$5
  shift 5
  if ! command -v mmdebstrap >/dev/null; then
    echo "installing mmdebstrap (builds Debian roots)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  fi
  if [[ ! -r $DEBIAN_KEYRING ]]; then
    echo "needs Debian's archive keys ($DEBIAN_KEYRING, package debian-archive-keyring)" >&2
    return 1
  fi
  local format=directory
  [[ $output == *.tar ]] && format=tar
  local partial=$output.partial
  rm -rf "$partial" "$stamp"
  mkdir -p "$(dirname "$output")" "$(dirname "$log")"
  if ! mmdebstrap --format="$format" --keyring="$DEBIAN_KEYRING" "$@" "$codename" "$partial" \
      "deb $DEBIAN_MIRROR/debian $codename main" \
      "deb $DEBIAN_MIRROR/debian $codename-updates main" \
      "deb $DEBIAN_MIRROR/debian-security $codename-security main" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$partial"
    echo "building the Debian root $output failed (log: $log)" >&2
    return 1
  fi
  rm -rf "$output"
  mv "$partial" "$output"
  printf '%s\n' "$wanted" >"$stamp"
}
