from __future__ import annotations

import pytest

from bpfleet_core.netpol import models
from tests.core.netpol import shared


@pytest.fixture
def topology() -> models.Topology:
    """The standard test topology: x, y, z with pods a, b, c serving 80 and 81."""
    return shared.standard_topology()
