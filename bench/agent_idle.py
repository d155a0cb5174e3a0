"""Agent idle cost: RSS and CPU of a running agent holding the example programs.

Target (brief): <= 80 MB RSS, <= 1% CPU. The agent runs as `make up` runs it, with the
four programs of examples/agent/desired.yaml attached, reconciling every 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from _fleet import REPO, signed_catalog

SETTLE_SECONDS = 10
MEASURE_SECONDS = 30


def main() -> None:
    with signed_catalog() as (artifact_dir, trust_dir), tempfile.TemporaryDirectory() as state:
        pin_root = Path(f"/sys/fs/bpf/bpfleet-bench-{uuid.uuid4().hex[:6]}")
        environment = {
            **os.environ,
            "BPFLEET_AGENT_PIN_ROOT": str(pin_root),
            "BPFLEET_AGENT_STATE_DIR": state,
            "BPFLEET_AGENT_DESIRED_STATE": str(REPO / "examples" / "agent" / "desired.yaml"),
            "BPFLEET_AGENT_ARTIFACT_DIRS": str(artifact_dir),
            "BPFLEET_AGENT_TRUST": str(trust_dir),
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "bpfleet_agent"], env=environment, stderr=subprocess.DEVNULL
        )
        try:
            status = Path(state) / "status.json"
            deadline = time.monotonic() + 60
            while not status.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            attached = [
                p["name"]
                for p in json.loads(status.read_text())["programs"]
                if p["state"] == "Attached"
            ]
            time.sleep(SETTLE_SECONDS)
            process = psutil.Process(agent.pid)
            before = process.cpu_times()
            time.sleep(MEASURE_SECONDS)
            after = process.cpu_times()
            rss_mb = process.memory_info().rss / 2**20
            cpu = (after.user + after.system - before.user - before.system) / MEASURE_SECONDS * 100
        finally:
            agent.terminate()
            agent.wait(timeout=10)
            empty = Path(state) / "empty.yaml"
            empty.write_text("programs: []\n")
            subprocess.run(
                [sys.executable, "-m", "bpfleet_cli.main", "agent", "run", "--once"],
                env={**environment, "BPFLEET_AGENT_DESIRED_STATE": str(empty)},
                stdout=subprocess.DEVNULL,
                check=False,
            )
            shutil.rmtree(pin_root, ignore_errors=True)
    print(f"agent idle with {len(attached)} programs attached ({', '.join(attached)}):")
    print(f"  RSS {rss_mb:.1f} MB (target <= 80 MB)")
    print(
        f"  CPU {cpu:.2f}% of one core over {MEASURE_SECONDS}s, reconciling every 2s (target <= 1%)"
    )


if __name__ == "__main__":
    main()
