"""One real `postkontor serve` per test module (hand-written config like production, capture MX on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adversarial.advsupport import AdvServer, CaptureMX, adv_server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AdvServer, CaptureMX]]:
    with adv_server(tmp_path_factory.mktemp("adv")) as running:
        yield running


@pytest.fixture(scope="module")
def server(world: tuple[AdvServer, CaptureMX]) -> AdvServer:
    return world[0]


@pytest.fixture(scope="module")
def sink(world: tuple[AdvServer, CaptureMX]) -> CaptureMX:
    return world[1]


@pytest.fixture(autouse=True)
def _server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test threw at it, the server process is still running afterwards."""
    yield
    if "server" in request.fixturenames:
        running = request.getfixturevalue("server")
        if isinstance(running, AdvServer):  # other modules of this folder may define their own `server`
            assert running.alive(), "the server died:\n" + running.log()[-3000:]
