"""The local fleet's secrets (its admin token, its webhook secret) are readable by their
owner only, from the moment they exist, even over a file others could read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bpfleet_cli import localfleet


def test_secrets_are_written_for_their_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0)  # the most permissive: the mode must not come from the umask
    try:
        fresh = tmp_path / "admin-token"
        localfleet.write_secret(fresh, "bpf_secret\n")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
        assert fresh.read_text() == "bpf_secret\n"

        # An old world-readable file (an older bpfleet wrote them so) is replaced whole.
        stale = tmp_path / "webhook-secret"
        stale.write_text("old\n")
        stale.chmod(0o644)
        localfleet.write_secret(stale, "new\n")
        assert stat.S_IMODE(stale.stat().st_mode) == 0o600
        assert stale.read_text() == "new\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-token", "webhook-secret"]
    finally:
        os.umask(previous)
