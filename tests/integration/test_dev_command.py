"""`postkontor dev`: the one command a new user runs."""

from __future__ import annotations

from pathlib import Path

from pkharness import DEMO, DEMO_PASSWORD, DevServer, free_port_base


def test_dev_first_run_prints_everything_and_later_runs_reuse_it(tmp_path: Path) -> None:
    server = DevServer(data=tmp_path / "dev", port_base=free_port_base())
    server.start()
    try:
        output = "".join(server.output)
        for expected in (f"127.0.0.1:{server.mx}", f"127.0.0.1:{server.submission}",
                         f"127.0.0.1:{server.submissions}", DEMO, DEMO_PASSWORD, str(server.cert), "ready"):
            assert expected in output, (expected, output)
        cert = server.cert.read_bytes()
    finally:
        assert server.stop() == 0
    server.start()
    try:
        assert server.cert.read_bytes() == cert, "the certificate is reused"
    finally:
        assert server.stop() == 0
