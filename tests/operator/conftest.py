from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.operator.kubernetes import Cluster, emulated_cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with emulated_cluster() as running:
        yield running
