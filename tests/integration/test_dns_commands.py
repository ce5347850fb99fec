"""The real `postkontor dns`, `check`, `dkim` and key creation by `init`/`domain add`/`dev`, against a loopback DNS
server whose zone is exactly what `postkontor dns` printed."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cli_run import fails, run
from loopback_dns import dns_server
from zonefile import zone_from

from postkontor.admin.dev import prepare_dev


def ok(data: Path, *args: str) -> str:
    result = run(data, *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def selectors(output: str) -> set[str]:
    return {match[1] for match in re.finditer(r"^(\S+)\._domainkey\.", output, re.MULTILINE)}


def key_files(data: Path, domain: str) -> list[Path]:
    return sorted((data / "dkim" / domain).glob("*.key"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`init`, then the administrator names the server's address in the config (the outbound address)."""
    directory = tmp_path_factory.mktemp("dns") / "srv"
    output = ok(directory, "init", "--domain", "example.com", "--hostname", "mail.example.com")
    assert "dkim keys    pk" in output and "dns example.com" in output
    config = directory / "postkontor.toml"
    config.write_text(config.read_text().replace('address = "0.0.0.0"', 'address = "127.0.0.1"'))
    return directory


def use_nameserver(data: Path, server: str) -> None:
    config = data / "postkontor.toml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("dns = ")]
    lines.insert(0, f'dns = ["{server}"]')
    config.write_text("\n".join(lines) + "\n")


def test_init_creates_private_dkim_keys(data: Path) -> None:
    """RFC 8463 §5: an Ed25519 and an RSA key for the first domain, private to the owner."""
    files = key_files(data, "example.com")
    assert [path.name.split(".", 1)[1] for path in files] == ["ed25519.key", "rsa.key"]
    for path in [*files, data / "dkim" / "example.com" / "state.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data / "dkim").stat().st_mode) == 0o700


def test_dns_prints_the_zone_and_check_agrees_then_catches_a_wrong_spf(data: Path) -> None:
    output = ok(data, "dns", "example.com")
    assert 'example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"' in output.splitlines()
    assert "mail.example.com. 3600 IN A 127.0.0.1" in output.splitlines()
    zone = zone_from(output)
    servfail = {"unused.invalid"}  # not empty: dns_server would replace an empty set by a new one
    with dns_server(zone, servfail) as server:
        use_nameserver(data, server)
        result = run(data, "check", "example.com")
        assert result.returncode == 0, result.stdout
        lines = result.stdout.splitlines()
        assert lines[0] == f"checking example.com (mail host mail.example.com) via {server}"
        assert all(line.startswith("ok ") for line in lines[1:-1]), result.stdout
        assert len([line for line in lines if " DKIM " in line]) == 2
        assert " SRV " in result.stdout and " PTR " in result.stdout and " MTA-STS " in result.stdout
        assert lines[-1].startswith("example.com: every required record is in place")

        zone["example.com", "TXT"] = ['"v=spf1 ip4:192.0.2.1 -all"']  # the server's dict, changed in place
        result = run(data, "check", "example.com")
        assert result.returncode == 1, result.stdout
        (wrong,) = [line for line in result.stdout.splitlines() if line.startswith("WRONG")]
        assert wrong.startswith("WRONG     SPF      example.com: expected a record authorising 127.0.0.1")
        assert 'got "v=spf1 ip4:192.0.2.1 -all" (fail)' in wrong

        servfail.add("_dmarc.example.com")
        zone["example.com", "TXT"] = ['"v=spf1 ip4:127.0.0.1 -all"']
        result = run(data, "check", "example.com")
        assert result.returncode == 3, result.stdout  # DNS trouble: unknown, not wrong
        assert any(line.startswith("TEMPFAIL  DMARC") for line in result.stdout.splitlines())
        servfail.discard("_dmarc.example.com")

        # --dns asks another server: one that knows nothing
        with dns_server({}) as empty:
            result = run(data, "check", "example.com", "--dns", empty)
            assert result.returncode == 1
            assert "MISSING   MX       example.com: expected MX 10 mail.example.com." in result.stdout


def test_rotation_keeps_the_old_selectors_published(data: Path) -> None:
    """RFC 6376 §3.1: a new selector per key; the old one stays in DNS while signed mail may be in transit."""
    before = selectors(ok(data, "dns", "example.com"))
    zone = zone_from(ok(data, "dns", "example.com"))
    output = ok(data, "dkim", "rotate", "example.com")
    assert "now signs with" in output and f"retired {', '.join(sorted(before))}" in output
    after = selectors(ok(data, "dns", "example.com"))
    assert before < after and len(after) == 4
    assert selectors(ok(data, "dkim", "records", "example.com")) == after
    assert "retired, kept for mail still in transit" in ok(data, "dns", "example.com")
    with dns_server(zone) as server:  # DNS still has only the old keys
        use_nameserver(data, server)
        result = run(data, "check", "example.com")
        assert result.returncode == 1
        missing = [line for line in result.stdout.splitlines() if line.startswith("MISSING")]
        assert len(missing) == 2 and all(" DKIM " in line for line in missing)
    assert "nothing to prune" in ok(data, "dkim", "prune", "example.com")
    assert len(key_files(data, "example.com")) == 4


def test_domain_add_creates_keys_and_dns_serves_every_local_domain(data: Path) -> None:
    output = ok(data, "domain", "add", "second.test")
    assert "DKIM keys pk" in output
    assert len(key_files(data, "second.test")) == 2
    lines = ok(data, "dns", "second.test").splitlines()
    assert "second.test. 3600 IN MX 10 mail.example.com." in lines
    assert "; the next record belongs in the zone that holds mail.example.com:" in lines
    assert len(selectors("\n".join(lines))) == 2
    assert "not a local domain" in fails(data, "dns", "unknown.test")
    assert "not a local domain" in fails(data, "dkim", "rotate", "unknown.test")
    assert not (data / "dkim" / "unknown.test").exists()


def test_policy_file_and_enforce_mode(data: Path) -> None:
    policy = ok(data, "dns", "example.com", "--mta-sts-policy", "--mta-sts-mode", "enforce")
    assert policy == "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"
    testing_id = re.search(r"id=(\w+)", ok(data, "dns", "example.com"))
    enforce_id = re.search(r"id=(\w+)", ok(data, "dns", "example.com", "--mta-sts-mode", "enforce"))
    assert testing_id and enforce_id and testing_id[1] != enforce_id[1]


def test_wildcard_listeners_print_a_placeholder_and_warn(tmp_path: Path) -> None:
    ok(tmp_path, "init", "--domain", "example.org")
    result = run(tmp_path, "dns", "example.org")
    assert result.returncode == 0
    assert "mail.example.org. 3600 IN A <OUTBOUND-IP>" in result.stdout.splitlines()
    assert result.stderr.startswith("postkontor: warning: no outbound address")
    assert "address" in result.stderr and "postkontor.toml" in result.stderr


def test_dev_directory_has_keys_and_names_the_listen_address(tmp_path: Path) -> None:
    prepare_dev(tmp_path, port_base=20000, listen="127.0.0.1", domain="dev.test", dns=None)
    assert len(key_files(tmp_path, "dev.test")) == 2
    lines = ok(tmp_path, "dns", "dev.test").splitlines()
    assert 'dev.test. 3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"' in lines
    assert "_submission._tcp.dev.test. 3600 IN SRV 10 1 20587 mail.dev.test." in lines
    # a later `dev --domain` with another domain gives that one keys too, and keeps the first one's
    before = key_files(tmp_path, "dev.test")
    prepare_dev(tmp_path, port_base=20000, listen="127.0.0.1", domain="other.test", dns=None)
    assert key_files(tmp_path, "dev.test") == before and len(key_files(tmp_path, "other.test")) == 2
