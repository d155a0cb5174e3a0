#!/usr/bin/env bash
# `make test` and a `make up` smoke test on another Debian release, on this kernel.
#
# Builds a minimal Debian root with mmdebstrap (cached; rebuilt when the package list of
# scripts/install-system-deps.sh or this script's base changes), clones the repository
# at a commit into a throwaway overlay on top of it, and runs there, as a new user on
# that release would: `make venv helm` (the downloads, on this host's network), then
# `make test`, then `make up` until the API answers and the three agents are Ready and
# run the seeded program, then Ctrl-C (SIGINT to its process group) and a check that
# nothing is left behind. Only the root filesystem is that release: the kernel is this
# machine's. Needs root.
#
#   scripts/test-in-debian-root.sh [--release 12|13] [--ref REF] [--repo PATH|URL]
#                                  [--no-test] [--no-up] [--keep] [--shell] [--rebuild]
#                                  [-- PYTEST_ARGS...]
#
# --shell opens a shell in the prepared root (own network namespace) instead of the
# tests; --keep leaves the run's files (the checkout, its .venv) for a later look;
# --rebuild builds the root anew (for the release's latest updates).
#
# Each step runs in private mount and network namespaces and a cgroup of its own: when
# it ends, its mounts and network namespaces go with it, and whatever process it left
# is killed, whatever failed. Processes share this host's PID namespace, as on a real
# machine (eBPF programs report the host's PIDs).
# Roots, logs and the pip download cache live under $BPFLEET_ROOTS (/var/tmp/bpfleet-roots
# by default); `rm -rf /var/tmp/bpfleet-roots` removes them all.
set -euo pipefail

ROOTS=${BPFLEET_ROOTS:-/var/tmp/bpfleet-roots}
# What every root has besides the project's own list: nothing the project runs.
BASE_VARIANT=minbase
ROOT_FORMAT=1  # bump when the root is built differently (hooks, sources): roots rebuild
CHECKOUT=/root/bpfleet  # where the clone sits inside the root, as a user's would
UP_TIMEOUT=${BPFLEET_UP_TIMEOUT:-300}  # seconds for `make up` to get its fleet running

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

say() { printf '== %s\n' "$*" >&2; }
fail() { printf 'test-in-debian-root: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------- inside the root
# These run in the root (the script copies itself in), with the checkout as cwd.

inside_prepare() {
  make venv helm
}

inside_shell() {
  exec bash
}

inside_test() {
  make test PYTEST_ARGS="$*"
}

api_get() {  # api_get URL [TOKEN]: the body, or nothing while the API does not answer
  .venv/bin/python - "$@" <<'PY' 2>/dev/null || true
import sys, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", f"Bearer {sys.argv[2]}")
with urllib.request.urlopen(request, timeout=5) as response:
    print(response.read().decode())
PY
}

fleet_running() {  # three nodes Ready, the seeded program Attached on each
  local api=$1 token=$2
  .venv/bin/python - "$(api_get "$api/v1/nodes" "$token")" \
    "$(api_get "$api/v1/programs/execsnoop/nodes" "$token")" <<'PY'
import json, sys
try:
    nodes, placements = json.loads(sys.argv[1]), json.loads(sys.argv[2])
except ValueError:
    sys.exit(1)
ready = [n for n in nodes if n.get("readiness") == "Ready"]
attached = [p for p in placements if p.get("state") == "Attached"]
print(f"{len(ready)} of {len(nodes)} nodes Ready, execsnoop Attached on {len(attached)}")
sys.exit(0 if len(ready) == len(nodes) == 3 and len(attached) == 3 else 1)
PY
}

processes_left() {  # every process of this step's cgroup but this script's own line
  .venv/bin/python - <<'PY'
import os
from pathlib import Path
mine, pid = set(), os.getpid()
while pid > 0:
    mine.add(pid)
    pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
(group,) = (line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
for entry in Path(f"/sys/fs/cgroup{group}/cgroup.procs").read_text().split():
    if int(entry) not in mine:
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        print(entry, command.decode().strip(), end="; ")
PY
}

inside_up() {
  local api=http://10.214.0.1:8080 log=/tmp/make-up.log started status
  setsid make up >"$log" 2>&1 &
  local group=$!
  started=$SECONDS
  until api_get "$api/healthz" | grep -q .; do
    kill -0 "$group" 2>/dev/null || { cat "$log"; echo "make up exited before the API answered"; return 1; }
    (( SECONDS - started < UP_TIMEOUT )) || { cat "$log"; echo "the API did not answer in ${UP_TIMEOUT}s"; kill -INT -- "-$group"; return 1; }
    sleep 1
  done
  echo "make up: /healthz answered after $((SECONDS - started))s"
  local progress=""
  until progress=$(fleet_running "$api" "$(cat .dev/local/admin-token 2>/dev/null)"); do
    kill -0 "$group" 2>/dev/null || { cat "$log"; echo "make up exited early"; return 1; }
    if (( SECONDS - started >= UP_TIMEOUT )); then
      cat "$log"; echo "the fleet was not running in ${UP_TIMEOUT}s: $progress"
      kill -INT -- "-$group"; wait "$group" || true; return 1
    fi
    sleep 2
  done
  echo "make up: $progress after $((SECONDS - started))s"
  kill -INT -- "-$group"  # what Ctrl-C sends: the whole foreground process group
  local waited=0
  while kill -0 "$group" 2>/dev/null && ((waited++ < 120)); do sleep 1; done
  if kill -0 "$group" 2>/dev/null; then
    echo "make up: still running 120s after SIGINT"
    kill -KILL -- "-$group"
  fi
  status=0
  wait "$group" || status=$?
  sed -n '/stopping/,$p' "$log"
  echo "make up: exited $status after SIGINT"
  local problems=()
  [[ $status -eq 0 || $status -eq 130 ]] || problems+=("exit status $status")
  local left
  left=$(processes_left)
  [[ -z $left ]] || problems+=("processes left: $left")
  [[ -z $(ip netns list) ]] || problems+=("network namespaces left: $(ip netns list | tr '\n' ' ')")
  ip -o link show | grep -q bpfl && problems+=("links left: $(ip -o link show | grep -o 'bpfl[^:@]*' | tr '\n' ' ')")
  compgen -G '/sys/fs/bpf/bpfleet-e2e-*' >/dev/null && problems+=("pins left: $(echo /sys/fs/bpf/bpfleet-e2e-*)")
  if (( ${#problems[@]} )); then
    printf 'make up left behind: %s\n' "${problems[@]}"
    return 1
  fi
  echo "make up: stopped cleanly (no processes, namespaces, links or pins left)"
}

if [[ ${1:-} == --inside ]]; then
  step=$2
  shift 2
  cd "$CHECKOUT"
  "inside_$step" "$@"
  exit
fi

# ----------------------------------------------------------------------- on the host

# shellcheck source=scripts/debian-roots.sh
source "$(dirname "$0")/debian-roots.sh"

release=13 ref=HEAD repo="" run_test=1 run_up=1 keep=0 shell=0 rebuild=0 pytest_args=()
while (($#)); do
  case $1 in
    --release) release=$2; shift 2 ;;
    --ref) ref=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --no-test) run_test=0; shift ;;
    --no-up) run_up=0; shift ;;
    --keep) keep=1; shift ;;
    --shell) shell=1 run_test=0 run_up=0; shift ;;
    --rebuild) rebuild=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done
codename=$(debian_codename "$release") ||
  fail "--release takes 12 (bookworm) or 13 (trixie), not '$release'"
case $codename in bookworm) release=12 ;; trixie) release=13 ;; esac
[[ $(id -u) -eq 0 ]] || fail "needs root (mmdebstrap, chroot, namespaces, eBPF)"
for tool in unshare chroot git flock; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done
# Each step's processes are kept in a cgroup of the unified (v2) hierarchy.
cgroups=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[[ -n $cgroups ]] || fail "needs the cgroup2 hierarchy mounted (systemd does it)"
if [[ -z $repo ]]; then
  repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
fi

mkdir -p "$ROOTS"
exec 9>"$ROOTS/debian$release.lock"
flock -n 9 || { say "another run on Debian $release holds $ROOTS/debian$release.lock; waiting"; flock 9; }

run_id=debian$release-$(date +%Y%m%d-%H%M%S)
run=$ROOTS/runs/$run_id
logs=$ROOTS/logs/$run_id
mkdir -p "$run/upper/root" "$run/work" "$run/merged" "$logs"
cleanup() {
  for group in "$cgroups/bpfleet-roots/$run_id"-*; do
    [[ -d $group ]] && end_cgroup "$group"
  done
  rmdir "$cgroups/bpfleet-roots" 2>/dev/null || true
  if ((keep)); then
    say "kept the run's files in $run"
  else
    rm -rf "$run"
  fi
}
trap cleanup EXIT

# The clone: committed history only, never the working tree.
commit=$(git -C "$repo" rev-parse --verify --quiet "$ref^{commit}") || fail "no commit '$ref' in $repo"
git clone --quiet --no-checkout "$repo" "$run/upper$CHECKOUT"
git -C "$run/upper$CHECKOUT" checkout --quiet --detach "$commit"
say "Debian $release ($codename), $(git -C "$run/upper$CHECKOUT" log -1 --format='%h %s' | cut -c1-80)"

# The root: rebuilt when what it should hold changes, never patched in place.
root=$ROOTS/debian$release
mapfile -t project_packages < <(bash "$run/upper$CHECKOUT/scripts/install-system-deps.sh" --list)
wanted=$(printf 'format %s\nvariant %s\nmirror %s\n' "$ROOT_FORMAT" "$BASE_VARIANT" "$DEBIAN_MIRROR"
  printf '%s\n' "${project_packages[@]}" | sort -u)
if ((!rebuild)) && debian_root_current "$root/fs" "$root/packages" "$wanted"; then
  say "root: $root/fs (cached; built $(date -r "$root/packages" '+%F %T'))"
else
  say "root: building $root/fs ($BASE_VARIANT + ${#project_packages[@]} packages); log in $logs/root.log"
  started=$SECONDS
  include=$(IFS=,; echo "${project_packages[*]}")
  debian_root_build "$codename" "$root/fs" "$root/packages" "$wanted" "$logs/root.log" \
    --variant="$BASE_VARIANT" --include="$include" \
    --customize-hook='printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
    --customize-hook='echo debian-root > "$1/etc/hostname"' ||
    fail "building the root failed (log: $logs/root.log)"
  say "root: built in $((SECONDS - started))s ($(du -sh "$root/fs" | cut -f1))"
fi

# The steps inside are this script's own (--inside), whatever the checkout holds.
install -D -m 0755 "$0" "$run/upper/usr/local/bin/test-in-debian-root"
mkdir -p "$ROOTS/cache/pip-debian$release"

# How this host reaches package registries (proxies, a CA bundle), handed to the root's
# downloads so they go out as the host's do; a CA file named there is mounted in too.
network_env=()
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
    PIP_INDEX_URL PIP_CERT PIP_DEFAULT_TIMEOUT SSL_CERT_FILE REQUESTS_CA_BUNDLE; do
  [[ -n ${!name:-} ]] && network_env+=("$name=${!name}")
done

# Mounts the run's overlay and what the tests need, then runs the step in the root.
# Arguments: run directory, pip cache, root, network (host|isolated), how many
# settings follow, the settings, the step and its arguments.
read -r -d '' ENTER_ROOT <<'ENTER' || true
run=$1 pip_cache=$2 lower=$3 network=$4 count=$5
shift 5
passed=("${@:1:count}")
shift "$count"
merged=$run/merged
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$run/upper,workdir=$run/work" "$merged"
mount -t proc proc "$merged/proc"
mount -t sysfs sysfs "$merged/sys"  # after unshare: its net/ is this namespace's
mount -t cgroup2 cgroup2 "$merged/sys/fs/cgroup"
mount -t bpf bpf "$merged/sys/fs/bpf"  # a bpffs of its own: pins never meet the host's
mount -t tracefs tracefs "$merged/sys/kernel/tracing"
mount -t debugfs debugfs "$merged/sys/kernel/debug"
mount --rbind /dev "$merged/dev"
mkdir -p "$merged/run/netns" "$merged/root/.cache/pip"
mount -t tmpfs tmpfs "$merged/run/netns"
mount -t tmpfs tmpfs "$merged/tmp"
mount --bind "$pip_cache" "$merged/root/.cache/pip"
if [[ $network == host ]]; then
  touch "$merged/etc/resolv.conf"
  mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"
  for setting in "${passed[@]}"; do
    file=${setting#*=}
    if [[ $file == /* && -f $file ]]; then
      mkdir -p "$merged${file%/*}"
      touch "$merged$file"
      mount --bind "$file" "$merged$file"
    fi
  done
else
  ip link set lo up
fi
exec chroot "$merged" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${passed[@]}" \
  test-in-debian-root --inside "$@"
ENTER

# Kills what is left in a step's cgroup, then removes the cgroup.
end_cgroup() {
  local group=$1 tries=0
  while [[ -s $group/cgroup.procs ]] && ((tries++ < 100)); do
    if [[ -e $group/cgroup.kill ]]; then
      echo 1 >"$group/cgroup.kill"
    else
      xargs -r kill -KILL <"$group/cgroup.procs" 2>/dev/null || true
    fi
    sleep 0.1
  done
  rmdir "$group"
}

# Runs "$@" (the script's --inside steps) in the root, in new mount namespace and a
# cgroup of its own: on this host's network (for downloads), or with --isolated in a
# network namespace of its own that has only loopback.
in_root() {
  local network=host namespaces=(--mount --propagation private) passed=() status=0
  if [[ $1 == --isolated ]]; then
    network=isolated namespaces+=(--net)
    shift
  else
    passed=("${network_env[@]}")
  fi
  local group=$cgroups/bpfleet-roots/$run_id-$1
  mkdir -p "$group"
  bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$group" \
    unshare "${namespaces[@]}" -- bash -euo pipefail -c "$ENTER_ROOT" enter-root "$run" \
    "$ROOTS/cache/pip-debian$release" "$root/fs" "$network" "${#passed[@]}" "${passed[@]}" "$@" ||
    status=$?
  end_cgroup "$group"
  return "$status"
}

status=0
started=$SECONDS
say "make venv helm (downloads on this host's network); log in $logs/prepare.log"
if ! in_root prepare >"$logs/prepare.log" 2>&1; then
  tail -30 "$logs/prepare.log" >&2
  fail "make venv helm failed in the root (log: $logs/prepare.log)"
fi
say "prepared in $((SECONDS - started))s (Python $(sed -n 's/^version[_info]* = //p' "$run/upper$CHECKOUT/.venv/pyvenv.cfg" | head -1))"

if ((shell)); then
  in_root --isolated shell
  exit
fi

test_summary="not run"
if ((run_test)); then
  started=$SECONDS
  say "make test (own network namespace); log in $logs/make-test.log"
  if in_root --isolated test "${pytest_args[@]}" >"$logs/make-test.log" 2>&1; then
    test_result=passed
  else
    test_result=FAILED status=1
  fi
  test_summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$logs/make-test.log" | tail -1 | tr -d '=' | xargs || true)
  [[ $test_result == passed ]] || grep -E '^(FAILED|ERROR) ' "$logs/make-test.log" >&2 || tail -30 "$logs/make-test.log" >&2
  say "make test $test_result in $((SECONDS - started))s: ${test_summary:-no pytest summary (see the log)}"
fi

up_summary="not run"
if ((run_up)); then
  started=$SECONDS
  say "make up smoke test (own network namespace); log in $logs/make-up.log"
  if in_root --isolated up >"$logs/make-up.log" 2>&1; then
    up_summary="passed"
  else
    up_summary="FAILED" status=1
    tail -30 "$logs/make-up.log" >&2
  fi
  grep '^make up:' "$logs/make-up.log" >&2 || true
  say "make up smoke $up_summary in $((SECONDS - started))s"
fi

say "Debian $release at $(git -C "$run/upper$CHECKOUT" rev-parse --short HEAD): make test: $test_summary; make up: $up_summary; logs in $logs"
exit "$status"
