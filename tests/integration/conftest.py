from __future__ import annotations

from collections.abc import Iterator

import pytest
from pkharness import DevServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One real `postkontor dev` process per test module, on free loopback ports."""
    with running_server(tmp_path_factory.mktemp("pk")) as running:
        yield running
