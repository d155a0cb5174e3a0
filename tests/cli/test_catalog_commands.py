"""The `bpfleet catalog` and `bpfleet keys` commands, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bpfleet_core import fitting, manifests
from bpfleet_core.features import FeatureReport
from tests.conftest import SignedCatalog

REPO = Path(__file__).resolve().parents[2]
BPFLEET = str(REPO / ".venv" / "bin" / "bpfleet")


def bpfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BPFLEET, *args], capture_output=True, text=True, timeout=60, check=False)


def test_keys_sign_and_verify(signed_catalog: SignedCatalog, tmp_path: Path) -> None:
    assert (
        bpfleet(
            "keys", "generate", str(tmp_path / "k.key"), str(tmp_path / "trust" / "k.pub")
        ).returncode
        == 0
    )
    objects = tmp_path / "objects"
    objects.mkdir()
    shutil.copyfile(signed_catalog.files("syscount").object, objects / "syscount.bpf.o")
    signed = bpfleet(
        "catalog",
        "sign",
        str(objects),
        "--key",
        str(tmp_path / "k.key"),
        "--catalog",
        str(REPO / "bpf-catalog" / "catalog.yaml"),
    )
    assert signed.returncode == 0, signed.stderr
    assert "signed syscount@1.0.0" in signed.stdout
    verified = bpfleet(
        "catalog", "verify", str(objects), "syscount", "--trust", str(tmp_path / "trust")
    )
    assert verified.returncode == 0, verified.stderr
    refused = bpfleet(
        "catalog", "verify", str(objects), "syscount", "--trust", str(signed_catalog.trust)
    )
    assert refused.returncode == 1
    assert "rejected: syscount.manifest.json: signature does not verify" in refused.stderr


def test_analyse_prints_a_manifest_and_refuses_a_broken_object(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    result = bpfleet(
        "catalog", "analyse", str(signed_catalog.files("tcplife").object), "--version", "3.1.0"
    )
    assert result.returncode == 0, result.stderr
    manifest = manifests.Manifest.model_validate_json(result.stdout)
    assert manifest.requirements.kernel_btf
    assert "ringbuf" in manifest.requirements.map_types
    broken = tmp_path / "broken.bpf.o"
    broken.write_bytes(b"not an elf")
    refused = bpfleet("catalog", "analyse", str(broken))
    assert refused.returncode == 1
    assert refused.stderr.startswith("bpfleet: ")
    assert "broken.bpf.o" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_offline_check_against_saved_reports(signed_catalog: SignedCatalog, tmp_path: Path) -> None:
    capable = tmp_path / "capable.json"
    limited = tmp_path / "limited.json"
    report = FeatureReport.model_validate_json(
        (REPO / "tests" / "cli" / "feature-report.json").read_text()
    )
    capable.write_text(report.model_copy(update={"node": "capable"}).to_json())
    no_ringbuf = {**report.map_types, "ringbuf": False}
    limited.write_text(
        report.model_copy(update={"node": "limited", "map_types": no_ringbuf}).to_json()
    )
    manifest = str(signed_catalog.files("execsnoop").manifest)
    result = bpfleet("catalog", "check", manifest, str(capable), str(limited))
    assert result.returncode == 1
    assert "capable: compatible" in result.stdout
    assert "limited: incompatible: kernel lacks map type ringbuf" in result.stdout
    assert bpfleet("catalog", "check", manifest, str(capable)).returncode == 0


def test_sign_puts_the_catalogs_constraints_into_the_signed_manifest(
    signed_catalog: SignedCatalog, tmp_path: Path
) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    shutil.copyfile(signed_catalog.files("syscount").object, objects / "syscount.bpf.o")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "syscount:\n"
        '  version: "2.0.0"\n'
        "  constraints:\n"
        "    entry_points: {count_sys_enter: {targets: [sys_enter]}}\n"
        "    config: {target_tgid: {minimum: 0, maximum: 4194304}}\n"
    )
    key = str(signed_catalog.private_key)
    signed = bpfleet("catalog", "sign", str(objects), "--key", key, "--catalog", str(catalog))
    assert signed.returncode == 0, signed.stderr
    assert "signed syscount@2.0.0" in signed.stdout
    manifest = manifests.parse((objects / "syscount.manifest.json").read_bytes())
    assert manifest.constraints is not None
    assert manifest.constraints.config["target_tgid"].maximum == 4194304
    assert manifest.constraints.entry_points["count_sys_enter"].targets == ("sys_enter",)

    catalog.write_text(
        'syscount:\n  version: "2.0.0"\n  constraints: {config: {colour: {minimum: 1}}}\n'
    )
    refused = bpfleet("catalog", "sign", str(objects), "--key", key, "--catalog", str(catalog))
    assert refused.returncode == 1
    assert "syscount" in refused.stderr
    assert "config variable 'colour', which syscount lacks" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_repository_catalog_constrains_what_its_programs_need_and_no_more(
    signed_catalog: SignedCatalog,
) -> None:
    """The catalog's own constraints leave every example and default working."""
    syscount = manifests.parse(signed_catalog.files("syscount").manifest.read_bytes())
    execsnoop = manifests.parse(signed_catalog.files("execsnoop").manifest.read_bytes())
    cgroups = manifests.parse(signed_catalog.files("cgroup_counter").manifest.read_bytes())
    assert syscount.constraints is not None
    assert execsnoop.constraints is not None
    assert cgroups.constraints is not None
    assert cgroups.constraints.entry_points["cgroup_ingress"].cgroups == ("/*",)
    for manifest in (syscount, execsnoop):
        defaults = {v.name: v.default for v in manifest.config if v.default is not None}
        assert fitting.config_problems(manifest, defaults) == [], manifest.name
