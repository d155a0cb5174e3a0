from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from bpfleet_api import fleet, policies
from bpfleet_api.changes import Changes
from bpfleet_api.db import get_engine
from bpfleet_api.deps import Admin, Downloader, Reader, SessionDep, SettingsDep
from bpfleet_api.fastpath import ArtifactFiles
from bpfleet_api.models import Artifact
from bpfleet_api.routes._changes import wake
from bpfleet_api.views import ArtifactView
from bpfleet_core import signing
from bpfleet_core.manifests import Sha256Hex
from bpfleet_core.protocol import POLICY_ARTIFACT

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


def artifact_view(artifact: Artifact) -> ArtifactView:
    return ArtifactView(
        digest=artifact.digest,
        name=artifact.name,
        version=artifact.version,
        signer=artifact.signer,
        uploaded_at=artifact.uploaded_at,
        manifest=fleet.manifest_of(artifact),
    )


@router.post("", status_code=201)
def upload(
    *,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: Admin,
    object: Annotated[bytes, File(description="The BPF ELF object.")],
    manifest: Annotated[bytes, File(description="Its manifest, as signed.")],
    signature: Annotated[bytes, File(description="The manifest's signature.")],
) -> ArtifactView:
    """Upload a signed artifact; it is verified against the API's trust store first. A
    new ``netpol`` build becomes the policy datapath of every node that enforces policies."""
    artifact = fleet.store_artifact(
        session, object, manifest, signature, signing.TrustStore.from_paths(settings.trust)
    )
    changes = policies.sync(session) if artifact.name == POLICY_ARTIFACT else Changes()
    session.commit()
    wake(request, changes)
    return artifact_view(artifact)


@router.get("")
def list_artifacts(session: SessionDep, _: Reader) -> list[ArtifactView]:
    """Every artifact's metadata and manifest (its files are downloads of their own)."""
    return [artifact_view(artifact) for artifact in fleet.list_artifacts(session)]


@router.get("/{digest}")
def get_artifact(digest: Sha256Hex, session: SessionDep, _: Reader) -> ArtifactView:
    return artifact_view(fleet.artifact_by_digest(session, digest))


@router.get(
    "/{digest}/{part}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    digest: Sha256Hex,
    part: Literal["object", "manifest", "signature"],
    request: Request,
    _: Downloader,
) -> Response:
    """The artifact's files byte for byte, for agents to verify themselves. Content-
    addressed, so cached for good: each API process reads a file from the database once
    (then ``fastpath`` serves it to agents)."""
    files: ArtifactFiles = request.app.state.files
    content = await files.load((digest, part), lambda: run_in_threadpool(_read_file, digest, part))
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def _read_file(digest: str, part: Literal["object", "manifest", "signature"]) -> bytes:
    with Session(get_engine()) as session:
        return fleet.artifact_file(session, digest, part)


@router.post("/gc")
def collect_garbage(request: Request, session: SessionDep, _: Admin) -> dict[str, list[str]]:
    """Delete artifacts that no program, current or past, refers to."""
    removed = fleet.collect_garbage(session)
    session.commit()
    # Other processes keep theirs until evicted: content-addressed, never wrong.
    request.app.state.files.forget(removed)
    return {"removed": removed}
