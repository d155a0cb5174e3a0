"""The agent's endpoints file is read within the shared YAML limits: an alias bomb in it
is an unusable file (the last good one still counts), not an agent that runs out of
memory."""

from __future__ import annotations

import pytest

from bpfleet_agent.desired import EndpointsError, parse_endpoints
from tests.core.test_yamlfiles import alias_bomb


def test_an_alias_bomb_in_the_endpoints_file_is_refused() -> None:
    with pytest.raises(EndpointsError, match="YAML nodes") as raised:
        parse_endpoints(alias_bomb(10))
    assert "the endpoints file" in str(raised.value)
