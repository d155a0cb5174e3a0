"""The operator reaches an https fleet API through the CA it is given
(``BPFLEET_OPERATOR_API_CA``, what the chart sets) and no other: the real API served over
TLS, the operator's client in this process and the standalone operator as a process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from bpfleet_cli import fleetrepo
from bpfleet_core import failures
from bpfleet_operator.fleetapi import FleetApi
from bpfleet_operator.settings import OperatorSettings
from tests import services
from tests.certificates import certificate_authority, server_certificate, write_certificate
from tests.conftest import SignedCatalog
from tests.gitrepos import GitRepo
from tests.operator.processes import BPFLEET, operator_environment, running
from tests.polling import wait_for

pytestmark = pytest.mark.services


def test_the_operator_verifies_an_https_api_with_its_configured_ca_only(
    redis: services.Redis,
    signed_catalog: SignedCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_key, ca = certificate_authority("fleet CA")
    _, stranger = certificate_authority("another CA")
    ours = write_certificate(ca, tmp_path / "ca.pem")
    theirs = write_certificate(stranger, tmp_path / "other-ca.pem")
    with services.api_server(
        f"sqlite:///{tmp_path}/bpfleet.db",
        redis.url,
        signed_catalog.trust,
        tmp_path,
        tls=server_certificate(ca_key, ca, tmp_path),
    ) as api:
        assert api.url.startswith("https://")
        monkeypatch.setenv("BPFLEET_OPERATOR_API_CA", str(ours))
        settings = OperatorSettings(api_url=api.url, api_token=SecretStr(api.admin_token))
        assert settings.api_ca == ours
        for ca_file in (theirs, None):  # another CA, or the system's trust store
            refusing = FleetApi.from_settings(settings.model_copy(update={"api_ca": ca_file}))
            try:
                with pytest.raises(failures.Failure, match="CERTIFICATE_VERIFY_FAILED"):
                    refusing.set_namespace_labels("refused", {"team": "x"})
            finally:
                refusing.close()
        fleet = FleetApi.from_settings(settings)
        try:
            fleet.set_namespace_labels("shop", {"team": "payments"})
        finally:
            fleet.close()
        with api.client() as admin:
            namespaces = [row["name"] for row in admin.get("/v1/namespaces").json()]
        assert namespaces == ["shop"], "nothing reached the API through an unverified client"

        # The standalone operator, configured by its environment alone, reports its pass.
        repo = GitRepo(tmp_path / "repo")
        repo.commit("nothing yet", {"README.md": "fleet\n"})
        source = tmp_path / "gitsource.yaml"
        source.write_text(yaml.safe_dump(fleetrepo.git_source(repo.path, "main", "1h")))
        environment = {
            **operator_environment(api, tmp_path / "operator", 0),
            "BPFLEET_OPERATOR_API_CA": str(ours),
        }
        with (
            running(
                [BPFLEET, "operator", "standalone", str(source)], environment, tmp_path / "op.log"
            ),
            api.client() as admin,
        ):
            wait_for(
                lambda: admin.get("/v1/gitsources/default/fleet").status_code == 200,
                60,
                "the standalone operator's report over TLS",
            )


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_bundle_that_cannot_be_read_is_refused_at_start(
    tmp_path: Path, content: str | None
) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    with pytest.raises(ValidationError, match=f"api_ca {bundle}: not a readable CA bundle"):
        OperatorSettings(api_url="https://fleet.example", api_ca=bundle)


def test_the_operator_says_in_one_line_that_its_ca_bundle_cannot_be_read(tmp_path: Path) -> None:
    source = tmp_path / "gitsource.yaml"
    source.write_text(yaml.safe_dump(fleetrepo.git_source(tmp_path, "main", "1h")))
    missing = tmp_path / "missing.pem"
    done = subprocess.run(
        [BPFLEET, "operator", "standalone", str(source)],
        env={**os.environ, "BPFLEET_OPERATOR_API_CA": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("bpfleet: ")
    assert f"api_ca {missing}: not a readable CA bundle" in line
