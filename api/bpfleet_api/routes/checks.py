from __future__ import annotations

from fastapi import APIRouter
from pydantic import ValidationError

from bpfleet_api import fleet
from bpfleet_api.changes import FleetError, Invalid
from bpfleet_api.deps import Checker, SessionDep
from bpfleet_api.views import (
    NodeVerdict,
    PreflightRequest,
    PreflightResult,
    ValidateRequest,
    ValidateResult,
)
from bpfleet_core.resources import BpfProgramSpec

router = APIRouter(prefix="/v1", tags=["checks"])


@router.post("/validate")
def validate(request: ValidateRequest, session: SessionDep, _: Checker) -> ValidateResult:
    """Would this spec be accepted? Schema, artifact, entry points, attach types, config."""
    try:
        spec = BpfProgramSpec.model_validate(request.spec)
        fleet.resolve_spec(session, spec)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        ]
        return ValidateResult(valid=False, problems=problems)
    except FleetError as error:
        return ValidateResult(valid=False, problems=error.problems or [error.message])
    return ValidateResult(valid=True, problems=[])


@router.post("/preflight")
def preflight(request: PreflightRequest, session: SessionDep, _: Checker) -> PreflightResult:
    """Which selected nodes could not run this artifact, and why; for specs or for
    manifests of artifacts not deployed yet."""
    if request.spec is not None:
        manifest = fleet.resolve_spec(session, request.spec)[1]
        selector = request.spec.node_selector
    elif request.manifest is not None:
        manifest, selector = request.manifest, request.node_selector
    else:
        raise Invalid("preflight needs a spec or a manifest")
    verdicts = fleet.preflight(session, manifest, selector)
    nodes = [
        NodeVerdict(node=n, compatible=not missing, missing=[m.describe() for m in missing])
        for n, missing in verdicts
    ]
    incompatible = sum(1 for verdict in nodes if not verdict.compatible)
    return PreflightResult(
        compatible=len(nodes) - incompatible, incompatible=incompatible, nodes=nodes
    )
