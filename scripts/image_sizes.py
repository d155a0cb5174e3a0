"""The built images' sizes against their budgets in images/images.txt.

    python3 scripts/image_sizes.py --version VERSION [--json] [TARGET...]

An image's size is what it takes unpacked: the sum of its layers' sizes in buildah's
storage (what `buildah images` shows, in bytes). Prints a Markdown table (the README's),
or JSON; exits 1 when an image is missing or over its budget, naming it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images" / "images.txt"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One line of images/images.txt."""

    target: str
    budget_mib: int
    runs: str


@dataclass(frozen=True)
class Measured:
    target: str
    image: str
    size_bytes: int
    budget_mib: int
    runs: str

    @property
    def size_mib(self) -> float:
        return self.size_bytes / MIB

    @property
    def over_budget(self) -> bool:
        return self.size_bytes > self.budget_mib * MIB


def read_entries(path: Path = IMAGES) -> list[Entry]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(maxsplit=2)
        if len(fields) != 3 or not fields[1].isdigit():
            raise SystemExit(f"{path}:{number}: expected 'target budget-MiB what-it-runs'")
        entries.append(Entry(fields[0], int(fields[1]), fields[2]))
    return entries


def image_name(target: str, version: str) -> str:
    return f"localhost/bpfleet/{target}:{version}"


def buildah_json(*arguments: str) -> object:
    done = subprocess.run(["buildah", *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LookupError(done.stderr.strip() or f"buildah {' '.join(arguments)} failed")
    return json.loads(done.stdout)


def layer_sizes() -> dict[str, int]:
    """Uncompressed digest -> size of every layer in buildah's storage."""
    info = buildah_json("info")
    assert isinstance(info, dict)
    store = info["store"]
    layers = Path(store["GraphRoot"]) / f"{store['GraphDriverName']}-layers" / "layers.json"
    return {
        layer["diff-digest"]: int(layer.get("diff-size", 0))
        for layer in json.loads(layers.read_text())
        if "diff-digest" in layer
    }


def image_size(image: str, sizes: dict[str, int]) -> int:
    inspected = buildah_json("inspect", "--type", "image", image)
    assert isinstance(inspected, dict)
    digests = inspected["OCIv1"]["rootfs"]["diff_ids"]
    missing = [digest for digest in digests if digest not in sizes]
    if missing:
        raise LookupError(f"{image}: layers not in buildah's storage: {missing}")
    return sum(sizes[digest] for digest in digests)


def measure(version: str, targets: list[str]) -> list[Measured]:
    entries = {entry.target: entry for entry in read_entries()}
    unknown = [target for target in targets if target not in entries]
    if unknown:
        raise SystemExit(f"no image {unknown} in {IMAGES} (known: {sorted(entries)})")
    sizes = layer_sizes()
    measured = []
    for target in targets or list(entries):
        entry, image = entries[target], image_name(target, version)
        measured.append(
            Measured(target, image, image_size(image, sizes), entry.budget_mib, entry.runs)
        )
    return measured


def table(measured: list[Measured]) -> str:
    lines = ["| image | size | budget | what runs from it |", "|---|---:|---:|---|"]
    for item in measured:
        name = item.image.removeprefix("localhost/")
        lines.append(
            f"| `{name}` | {item.size_mib:.0f} MiB | {item.budget_mib} MiB | {item.runs} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the images' tag")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("targets", nargs="*", help="images/images.txt targets (default: all)")
    arguments = parser.parse_args()
    try:
        measured = measure(arguments.version, arguments.targets)
    except LookupError as error:
        print(f"image_sizes: {error}", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps([{**asdict(item), "size_mib": item.size_mib} for item in measured]))
    else:
        print(table(measured))
    over = [item for item in measured if item.over_budget]
    for item in over:
        print(
            f"image_sizes: {item.image} takes {item.size_mib:.0f} MiB, over its budget of "
            f"{item.budget_mib} MiB (images/images.txt)",
            file=sys.stderr,
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
