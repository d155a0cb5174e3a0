"""Removing a key from the trust store counts at once, without a restart; and, if the
node says so, what only that key vouched for is detached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bpfleet_agent.daemon import Agent
from bpfleet_agent.trust import TrustFiles
from bpfleet_core import signing
from bpfleet_core.protocol import ProgramState
from tests.conftest import SignedCatalog, sign_object
from tests.nodeagent.conftest import AgentEnv, program

EXECS = program("execs", "execsnoop", "1.0.0", {"entryPoint": "handle_exec", "type": "tracepoint"})


def _trust_dir(catalog: SignedCatalog, tmp_path: Path) -> Path:
    """The catalog's key and an unrelated one: removing the catalog's leaves a store
    that still holds a key, read whole."""
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copyfile(catalog.trust / "signing.pub", trust / "release.pub")
    signing.generate_key_pair(tmp_path / "other.key", trust / "other.pub")
    return trust


# ----------------------------------------------------------------------------- pure


def test_the_trust_store_follows_its_files(signed_catalog: SignedCatalog, tmp_path: Path) -> None:
    trust = _trust_dir(signed_catalog, tmp_path)
    files = TrustFiles([trust])
    released = files.current().keys
    assert len(released) == 2
    release_id = signing.key_id(signing.load_public_key(trust / "release.pub"))

    (trust / "release.pub").rename(tmp_path / "release.pub")
    assert release_id not in {key.key_id for key in files.current().keys}
    assert files.whole

    (trust / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    shutil.copyfile(tmp_path / "release.pub", trust / "release.pub")
    assert {key.key_id for key in files.current().keys} == {key.key_id for key in released}
    assert not files.whole, "a key file that cannot be read is said so"
    assert any("broken.pub" in problem for problem in files.problems)


def test_a_trust_store_that_cannot_be_read_at_start_stops_the_agent(tmp_path: Path) -> None:
    with pytest.raises(signing.SignatureError, match="cannot read public key"):
        TrustFiles([tmp_path / "no-such-trust"])


# ----------------------------------------------------------------------------- real eBPF


@pytest.mark.bpf
def test_a_removed_key_counts_at_once_and_what_runs_stays_by_default(
    agent_env: AgentEnv, tmp_path: Path
) -> None:
    trust = _trust_dir(agent_env.catalog, tmp_path)
    settings = agent_env.settings().model_copy(update={"trust": [trust]})
    agent_env.write_desired(EXECS)
    agent = Agent(settings)
    (before,) = agent.reconcile_file(agent_env.desired_file).programs
    assert before.state == ProgramState.ATTACHED

    (trust / "release.pub").rename(tmp_path / "release.pub")  # the key leaked: revoked
    (revoked,) = agent.reconcile_file(agent_env.desired_file).programs
    assert (revoked.state, revoked.reason) == (ProgramState.SIGNATURE_REJECTED, "BadSignature")
    assert "no trusted key vouches for the running version any more" in revoked.message
    assert "BPFLEET_AGENT_DETACH_UNTRUSTED is false" in revoked.message
    assert (agent_env.pin_root / "execs" / "links").exists(), "it keeps running"

    (tmp_path / "release.pub").rename(trust / "release.pub")  # trusted again
    (again,) = agent.reconcile_file(agent_env.desired_file).programs
    assert again.state == ProgramState.ATTACHED
    assert again.program_ids == before.program_ids, "adopted, not loaded anew"


@pytest.mark.bpf
def test_when_the_node_says_so_what_no_trusted_key_vouches_for_is_detached(
    agent_env: AgentEnv, tmp_path: Path
) -> None:
    trust = _trust_dir(agent_env.catalog, tmp_path)
    settings = agent_env.settings().model_copy(update={"trust": [trust], "detach_untrusted": True})
    agent_env.write_desired(EXECS)
    agent = Agent(settings)
    assert agent.reconcile_file(agent_env.desired_file).programs[0].state == "Attached"

    (trust / "broken.pub").write_text("garbage")
    (trust / "release.pub").rename(tmp_path / "release.pub")
    (held,) = agent.reconcile_file(agent_env.desired_file).programs
    assert held.state == ProgramState.SIGNATURE_REJECTED
    assert "stays attached until the trust store can be read whole" in held.message
    assert (agent_env.pin_root / "execs").exists(), "a store read in part detaches nothing"
    report = agent.report()
    assert "broken.pub" in report.error

    (trust / "broken.pub").unlink()
    (detached,) = agent.reconcile_file(agent_env.desired_file).programs
    assert detached.state == ProgramState.SIGNATURE_REJECTED
    assert "detached: no trusted key vouches for the version that ran" in detached.message
    assert not (agent_env.pin_root / "execs").exists()


@pytest.mark.bpf
def test_an_untrusted_new_version_never_detaches_the_trusted_one_that_runs(
    agent_env: AgentEnv, tmp_path: Path
) -> None:
    trust = _trust_dir(agent_env.catalog, tmp_path)
    settings = agent_env.settings().model_copy(update={"trust": [trust], "detach_untrusted": True})
    agent_env.write_desired(EXECS)
    agent = Agent(settings)
    (before,) = agent.reconcile_file(agent_env.desired_file).programs
    assert before.state == ProgramState.ATTACHED

    # Another object for the same program, signed by a key this node does not trust.
    untrusted = tmp_path / "untrusted"
    signing.generate_key_pair(tmp_path / "stranger.key", tmp_path / "stranger.pub")
    sign_object(
        agent_env.catalog.files("syscount").object,
        untrusted,
        "syscount",
        "1.0.0",
        tmp_path / "stranger.key",
    )
    agent_env.artifact_dirs.insert(0, untrusted)
    agent_env.write_desired(
        program(
            "execs",
            "syscount",
            "1.0.0",
            {"entryPoint": "count_sys_enter", "type": "raw_tracepoint"},
        ),
        revision=2,
    )
    moved = agent_env.settings().model_copy(update={"trust": [trust], "detach_untrusted": True})
    (after,) = Agent(moved).reconcile_file(agent_env.desired_file).programs
    assert (after.state, after.reason) == (ProgramState.SIGNATURE_REJECTED, "BadSignature")
    assert "the previous version stays attached" in after.message
    assert (agent_env.pin_root / "execs" / "links").exists()
