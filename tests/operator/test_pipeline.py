"""One GitSource pass at a time, against a real Git repository and the Kubernetes
emulator: apply, prune, drift, the last good revision, signatures, suspension."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bpfleet_core import failures, yamlfiles
from bpfleet_core.resources import GitRef, GitSourceSpec, GitSourceStatus
from bpfleet_operator import git, gitsource, kube
from tests.gitrepos import GitRepo, SmartHttpServer, SshServer
from tests.manifests import program_yaml
from tests.operator.kubernetes import Cluster
from tests.polling import wait_for

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
"""


class Source:
    """A GitSource's state between passes, as the daemon keeps it."""

    def __init__(
        self,
        repo: GitRepo,
        cluster: Cluster,
        tmp_path: Path,
        *,
        key: str = "default/fleet",
        scope: gitsource.Scope = gitsource.ANYWHERE,
        **spec: object,
    ) -> None:
        self.spec = GitSourceSpec.model_validate({"url": str(repo.path), **spec})
        self.status = GitSourceStatus()
        self.checkout = git.Checkout(self.spec.url, tmp_path / "clones" / key, allow_local=True)
        self.target = kube.KubeTarget(kube.Kube(kube.connect(cluster.url)))
        self.key = key
        self.scope = scope

    def reconcile(self) -> gitsource.Result:
        result = gitsource.reconcile(
            self.spec,
            self.status,
            self.checkout,
            self.target,
            source=self.key,
            now=datetime.now(UTC),
            generation=1,
            scope=self.scope,
        )
        self.status = result.status
        return result


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


def test_applies_prunes_and_records_inventory_and_history(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    first = repo.commit(
        "two programs and a policy",
        {
            "a.yaml": program_yaml("alpha"),
            "b.yaml": program_yaml("beta"),
            "web.yaml": POLICY,
        },
    )
    source = Source(repo, cluster, tmp_path)
    result = source.reconcile()
    assert (result.outcome, result.changed) == ("Applied", 3)
    alpha = cluster.get("bpfprograms", "alpha")
    assert alpha is not None
    assert alpha["metadata"]["labels"] == {"bpfleet.io/gitsource": "default.fleet"}
    assert alpha["metadata"]["annotations"] == {"bpfleet.io/revision": f"main@sha1:{first}"}
    # A plain networking.k8s.io policy becomes a bpfleet one, enforced everywhere.
    policy = cluster.get("networkpolicies", "web", "shop")
    assert policy is not None
    assert policy["apiVersion"] == "bpfleet.io/v1alpha1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}
    assert [e.key for e in source.status.inventory] == [
        "BpfProgram/alpha",
        "BpfProgram/beta",
        "NetworkPolicy/shop/web",
    ]
    ready = source.status.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "Succeeded")

    # Nothing changed: nothing written, no new history entry.
    assert source.reconcile().changed == 0
    assert len(source.status.history) == 1

    second = repo.commit("drop beta", remove=("b.yaml",))
    result = source.reconcile()
    assert (result.outcome, result.pruned) == ("Applied", 1)
    assert cluster.get("bpfprograms", "beta") is None
    assert cluster.get("bpfprograms", "alpha") is not None
    assert source.status.last_applied_revision == f"main@sha1:{second}"
    assert [h.revision for h in source.status.history] == [
        f"main@sha1:{second}",
        f"main@sha1:{first}",
    ]


def test_prune_off_leaves_removed_objects(repo: GitRepo, cluster: Cluster, tmp_path: Path) -> None:
    repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path, prune=False)
    source.reconcile()
    repo.commit("gone", remove=("a.yaml",))
    assert source.reconcile().pruned == 0
    assert cluster.get("bpfprograms", "alpha") is not None


def test_hand_made_drift_is_put_back(repo: GitRepo, cluster: Cluster, tmp_path: Path) -> None:
    repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path)
    source.reconcile()
    cluster.patch("bpfprograms", "alpha", {"spec": {"config": {"target_uid": 0}}})
    assert source.reconcile().changed == 1
    alpha = cluster.get("bpfprograms", "alpha")
    assert alpha is not None
    assert "config" not in alpha["spec"]


def test_an_invalid_revision_applies_nothing_and_the_last_good_one_holds(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    good = repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path)
    source.reconcile()
    bad = repo.commit(
        "beta, and a typo",
        {
            "b.yaml": program_yaml("beta"),
            "c.yaml": program_yaml("gamma", attach_type="tracepiont"),
        },
    )
    cluster.patch("bpfprograms", "alpha", {"spec": {"config": {"target_uid": 0}}})
    result = source.reconcile()
    assert result.outcome == "Rejected"
    assert cluster.get("bpfprograms", "beta") is None
    status = source.status
    assert status.last_applied_revision == f"main@sha1:{good}"
    assert status.last_attempted_revision == f"main@sha1:{bad}"
    (error,) = status.errors
    assert (error.file, error.line, error.field) == ("c.yaml", 8, "spec.attach[0].type")
    conditions = {c.type: c for c in status.conditions}
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("False", "ValidationFailed")
    assert conditions["Stalled"].status == "True"
    # The last good revision still holds, hand-made drift included.
    alpha = cluster.get("bpfprograms", "alpha")
    assert alpha is not None
    assert "config" not in alpha["spec"]


def test_a_pass_ships_the_text_the_policy_editor_opens(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    commented = "# web: port 80 for everyone\n" + POLICY
    good = repo.commit(
        "a policy and a program",
        {"policies/web.yaml": commented, "a.yaml": program_yaml("alpha"), "notes.txt": "x"},
    )
    source = Source(repo, cluster, tmp_path)
    result = source.reconcile()
    # The files holding policies, as written (comments kept); no program file.
    assert [(item.revision, item.path, item.text) for item in result.files] == [
        (f"main@sha1:{good}", "policies/web.yaml", commented)
    ]
    broken = POLICY.replace("port: 80", "port: 0")
    bad = repo.commit("port 0", {"policies/db.yaml": broken})
    result = source.reconcile()
    assert result.outcome == "Rejected"
    # The rejected revision's files its errors name.
    assert [(item.revision, item.path, item.text) for item in result.files] == [
        (f"main@sha1:{bad}", "policies/db.yaml", broken)
    ]


def test_shipped_text_is_bounded() -> None:
    big = b"#" * (300 * 1024)
    texts = {"a.yaml": big, "b.yaml": big, "c.yaml": b"x: 1\n", "d.yaml": b"\xff\xfe"}
    shipped = gitsource.source_files("r", texts, ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "z"])
    # b.yaml does not fit beside a.yaml; d.yaml is not UTF-8; z was not read.
    assert [item.path for item in shipped] == ["a.yaml", "c.yaml"]


def test_suspended_sources_do_nothing(repo: GitRepo, cluster: Cluster, tmp_path: Path) -> None:
    repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path, suspend=True)
    assert source.reconcile().outcome == "Suspended"
    assert cluster.get("bpfprograms", "alpha") is None
    assert source.status.last_fetched_revision == ""


def test_fetch_failures_are_reported(cluster: Cluster, tmp_path: Path) -> None:
    source = Source(GitRepo(tmp_path / "empty"), cluster, tmp_path)
    result = source.reconcile()  # no commit on main yet
    assert result.outcome == "Failed"
    assert source.status.conditions[0].reason == "FetchFailed"


def test_objects_of_another_source_are_not_taken_over(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.create(
        "bpfprograms",
        {
            "apiVersion": "bpfleet.io/v1alpha1",
            "kind": "BpfProgram",
            "metadata": {"name": "alpha", "labels": {"bpfleet.io/gitsource": "other.source"}},
            "spec": yaml.safe_load(program_yaml("alpha"))["spec"],
        },
    )
    repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path)
    result = source.reconcile()
    assert result.outcome == "Failed"
    assert "belongs to GitSource other.source" in result.message
    assert {c.type for c in source.status.conditions} == {"Ready", "Stalled"}


def _ssh_key(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


def test_only_commits_signed_by_a_trusted_key_apply(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    trusted = _ssh_key(tmp_path / "trusted")
    _ssh_key(tmp_path / "stranger")
    source = Source(repo, cluster, tmp_path, trusted_signing_keys=[trusted])

    repo.commit("unsigned", {"a.yaml": program_yaml("alpha")})
    assert source.reconcile().outcome == "Rejected"
    assert source.status.conditions[0].reason == "UntrustedRevision"
    assert cluster.get("bpfprograms", "alpha") is None

    def signed_commit(key: Path, name: str) -> None:
        (repo.path / f"{name}.yaml").write_text(program_yaml(name))
        repo.git("add", f"{name}.yaml")
        repo.git(
            "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", name
        )

    signed_commit(tmp_path / "stranger", "beta")
    assert source.reconcile().outcome == "Rejected"
    signed_commit(tmp_path / "trusted", "gamma")
    assert source.reconcile().outcome == "Applied"
    assert cluster.get("bpfprograms", "gamma") is not None


def test_https_credentials_reach_the_remote(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    commit = repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    with SmartHttpServer(repo.path.parent, "ci", "t0ken") as server:
        url = server.url(repo.path.name)
        refused = git.Checkout(url, tmp_path / "anonymous", git.Credentials(ca=server.ca))
        with pytest.raises(git.GitError, match="could not read Username"):
            refused.fetch(GitRef(branch="main"))
        untrusted = git.Checkout(url, tmp_path / "untrusted", git.Credentials("ci", "t0ken"))
        with pytest.raises(git.GitError, match="certificate"):
            untrusted.fetch(GitRef(branch="main"))
        allowed = git.Checkout(
            url, tmp_path / "clone", git.Credentials("ci", "t0ken", ca=server.ca)
        )
        assert allowed.fetch(GitRef(branch="main")).commit == commit
        assert list(allowed.manifests(commit)) == ["a.yaml"]


def test_ssh_keys_and_known_hosts_reach_the_remote(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    with SshServer(tmp_path / "ssh") as server:
        url = server.url(repo.path)
        ssh = git.Credentials(identity=server.identity, known_hosts=server.known_hosts)
        allowed = git.Checkout(url, tmp_path / "clone", ssh)
        assert allowed.fetch(GitRef(branch="main")).commit == commit
        # A host that is not the one in known_hosts is refused, not trusted on first use.
        stranger = git.Credentials(identity=server.identity, known_hosts="")
        with pytest.raises(git.GitError, match="Host key verification failed"):
            git.Checkout(url, tmp_path / "other", stranger).fetch(GitRef(branch="main"))


def test_files_that_are_not_manifests_are_never_read(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    repo.commit(
        "a program, a logo and a large archive",
        {
            "a.yaml": program_yaml("alpha"),
            "logo.png": b"\x89PNG\r\n\x1a\n\xff\xfe\x00",
            "assets/archive.bin": os.urandom(3 << 20),
        },
    )
    result = Source(repo, cluster, tmp_path).reconcile()
    assert result.outcome == "Applied", result.message
    assert cluster.get("bpfprograms", "alpha") is not None


def test_a_manifest_too_large_or_not_text_rejects_the_revision_naming_it(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    first = repo.commit("alpha", {"a.yaml": program_yaml("alpha")})
    source = Source(repo, cluster, tmp_path)
    assert source.reconcile().outcome == "Applied"

    padding = "# padding\n" * (yamlfiles.LIMITS.file_bytes // 10 + 1)
    repo.commit("too large", {"b.yaml": program_yaml("beta") + padding})
    assert source.reconcile().outcome == "Rejected"
    (error,) = source.status.errors
    assert error.file == "b.yaml"
    assert f"more than the {yamlfiles.LIMITS.file_bytes} bytes" in error.message

    repo.commit("not text", {"b.yaml": b"kind: \xff\xfe\n"})
    assert source.reconcile().outcome == "Rejected"
    (error,) = source.status.errors
    assert error.file == "b.yaml"
    assert "not UTF-8" in error.message
    assert cluster.get("bpfprograms", "beta") is None
    assert source.status.last_applied_revision == f"main@sha1:{first}"


def test_manifests_are_read_within_a_count_and_a_total_size(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit(
        "three programs", {f"{name}.yaml": program_yaml(name) for name in ("a", "b", "c")}
    )
    checkout = git.Checkout(str(repo.path), tmp_path / "clone", allow_local=True)
    checkout.fetch(GitRef(branch="main"))
    assert sorted(checkout.manifests(commit)) == ["a.yaml", "b.yaml", "c.yaml"]
    with pytest.raises(git.GitError, match="more than 2 manifest files"):
        checkout.manifests(commit, limits=git.ReadLimits(files=2))
    size = len(program_yaml("a").encode())
    with pytest.raises(git.GitError, match=f"more than {2 * size} bytes"):
        checkout.manifests(commit, limits=git.ReadLimits(total_bytes=2 * size))


def by_hand(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "bpfleet.io/v1alpha1",
        "kind": "BpfProgram",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": yaml.safe_load(program_yaml(name))["spec"],
    }


def test_objects_made_by_hand_are_never_adopted(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.create("bpfprograms", by_hand("alpha", {"team": "ops"}))
    repo.commit("alpha", {"a.yaml": program_yaml("alpha", attach_type="raw_tracepoint")})
    source = Source(repo, cluster, tmp_path)
    result = source.reconcile()
    assert result.outcome == "Failed"
    assert "no GitSource made it" in result.message
    alpha = cluster.get("bpfprograms", "alpha")
    assert alpha is not None
    assert alpha["metadata"]["labels"] == {"team": "ops"}  # not labelled as ours
    assert alpha["spec"]["attach"][0]["type"] == "tracepoint"  # not changed


def test_pruning_deletes_only_what_the_source_still_owns(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    repo.commit("alpha and beta", {"a.yaml": program_yaml("alpha"), "b.yaml": program_yaml("beta")})
    source = Source(repo, cluster, tmp_path)
    assert source.reconcile().outcome == "Applied"
    # Since: beta was deleted and made again by hand; alpha given to another source.
    cluster.delete("bpfprograms", "beta")
    wait_for(lambda: cluster.get("bpfprograms", "beta") is None, 10, "beta to go")
    cluster.create("bpfprograms", by_hand("beta"))
    cluster.patch(
        "bpfprograms", "alpha", {"metadata": {"labels": {"bpfleet.io/gitsource": "other.source"}}}
    )
    repo.commit("gone from Git", remove=("a.yaml", "b.yaml"))
    assert source.reconcile().outcome == "Applied"
    assert cluster.get("bpfprograms", "alpha") is not None
    assert cluster.get("bpfprograms", "beta") is not None
    assert source.status.inventory == ()


POLICY_IN = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: {namespace}}}
spec:
  podSelector: {{}}
"""


def test_a_source_outside_the_trusted_namespaces_applies_its_own_namespaces_policies_only(
    repo: GitRepo, cluster: Cluster, tmp_path: Path
) -> None:
    source = Source(repo, cluster, tmp_path, key="team-a/fleet", scope=gitsource.Scope("team-a"))
    repo.commit(
        "a program, and policies here and elsewhere",
        {
            "p.yaml": program_yaml("alpha"),
            "mine.yaml": POLICY_IN.format(namespace="team-a"),
            "theirs.yaml": POLICY_IN.format(namespace="prod").replace("name: web", "name: db"),
        },
    )
    result = source.reconcile()
    assert result.outcome == "Rejected"
    assert source.status.conditions[0].reason == "OutOfScope"
    errors = {(e.file, e.field): e.message for e in source.status.errors}
    assert "cluster-scoped" in errors[("p.yaml", "kind")]
    assert "not of prod" in errors[("theirs.yaml", "metadata.namespace")]
    assert cluster.get("bpfprograms", "alpha") is None
    assert cluster.get("networkpolicies", "web", "team-a") is None  # all or nothing

    repo.commit("only its own", remove=("p.yaml", "theirs.yaml"))
    assert source.reconcile().outcome == "Applied"
    assert cluster.get("networkpolicies", "web", "team-a") is not None


def test_passes_back_off_after_failures_and_never_wait_past_the_interval() -> None:
    backoff = failures.Backoff(first=5)
    waits = [backoff.wait(failed, 60) for failed in (True, True, True, True, True, False, True)]
    assert waits == [5, 10, 20, 40, 60, 60, 5]

    passes: list[int] = []
    slept: list[float] = []

    def one_pass() -> tuple[bool, float]:
        passes.append(len(passes))
        return len(passes) < 3, 30  # fails twice, then succeeds

    gitsource.follow(one_pass, first_retry=2, sleep=slept.append, stopped=lambda: len(passes) >= 4)
    assert slept == [2, 4, 30]
