"""The fleet's topology, as network policies are judged against it: every declared
endpoint with its node and labels, the namespaces with their labels, and the labels of
the nodes hosting endpoints (for policies' node selectors)."""

from __future__ import annotations

from fastapi import APIRouter

from bpfleet_api import policies
from bpfleet_api.deps import Reader, SessionDep
from bpfleet_core.netpol.models import Topology

router = APIRouter(prefix="/v1/topology", tags=["policies"])


@router.get("")
def get_topology(session: SessionDep, _: Reader) -> Topology:
    """The document the simulator reads (``bpfleet policy matrix --topology``), so a
    change to policies can be judged against the fleet before it is applied."""
    return policies.fleet_topology(session)
