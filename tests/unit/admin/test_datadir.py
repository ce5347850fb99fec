"""`init_data_dir` and `prepare_dev`: what they create, what they refuse, what later runs keep."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from postkontor.admin import AdminError, init_data_dir, open_accounts, prepare_dev
from postkontor.admin.datadir import load_data_dir
from postkontor.config import ConfigError, ListenerConfig, ListenerKind, load_config
from postkontor.store.accounts import AccountError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_complete_private_directory(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    config = init_data_dir(data, domain="Example.COM", hostname="mail.example.com")
    assert config == load_config(data / "postkontor.toml")
    assert [(item.kind, item.address, item.port) for item in config.listeners] == [
        (ListenerKind.MX, "0.0.0.0", 25),
        (ListenerKind.SUBMISSION, "0.0.0.0", 587),
        (ListenerKind.SUBMISSIONS, "0.0.0.0", 465),
        (ListenerKind.IMAP, "0.0.0.0", 143),
        (ListenerKind.IMAPS, "0.0.0.0", 993),
        (ListenerKind.POP3, "0.0.0.0", 110),
        (ListenerKind.POP3S, "0.0.0.0", 995),
    ]
    assert config.tls is not None and config.tls.cert.exists() and config.tls.key.exists()
    for name in ("tls", "mail", "spool", "queue"):
        assert _mode(data / name) == 0o700, name
    assert _mode(data) == 0o700
    assert "#" in (data / "postkontor.toml").read_text()
    with open_accounts(config) as accounts:
        assert accounts.list_domains() == ["example.com"]


def test_init_refuses_an_initialised_directory(tmp_path: Path) -> None:
    init_data_dir(tmp_path, domain="example.com", hostname="mail.example.com")
    config_text = (tmp_path / "postkontor.toml").read_text()
    with pytest.raises(AdminError, match="already"):
        init_data_dir(tmp_path, domain="other.test", hostname="mail.other.test")
    assert (tmp_path / "postkontor.toml").read_text() == config_text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"domain": "bad..domain", "hostname": "mail.example.com"}, AccountError),
        ({"domain": "example.com", "hostname": "not a host"}, AdminError),
        ({"domain": "example.com", "hostname": "mail.example.com", "dns": ["resolver.example"]}, AdminError),
    ],
)
def test_init_checks_everything_before_writing(
    tmp_path: Path, kwargs: dict[str, object], error: type
) -> None:
    data = tmp_path / "srv"
    with pytest.raises(error):
        init_data_dir(data, **kwargs)  # type: ignore[arg-type]
    assert not data.exists()


def test_init_with_custom_listeners_keeps_an_existing_certificate(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("mine")
    listeners = [ListenerConfig(ListenerKind.MX, "::1", 2525, name="test")]
    config = init_data_dir(
        tmp_path, domain="example.com", hostname="mx.example.com", listeners=listeners, dns=["::1"]
    )
    assert config.listeners == tuple(listeners)
    assert config.dns_servers == ("::1",)
    assert (tmp_path / "tls" / "cert.pem").read_text() == "mine"


def test_init_rejects_clashing_listeners(tmp_path: Path) -> None:
    listeners = [
        ListenerConfig(ListenerKind.MX, "0.0.0.0", 25),
        ListenerConfig(ListenerKind.MX, "127.0.0.1", 25),
    ]
    with pytest.raises(AdminError, match="clashes"):
        init_data_dir(tmp_path, domain="example.com", hostname="mx.example.com", listeners=listeners)


def test_load_data_dir_explains_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="does not exist"):
        load_data_dir(tmp_path / "absent")
    with pytest.raises(AdminError, match=r"no postkontor\.toml"):
        load_data_dir(tmp_path)
    (tmp_path / "postkontor.toml").write_text("hostname = 1\n")
    with pytest.raises(ConfigError, match=":1: hostname"):
        load_data_dir(tmp_path)


def test_open_accounts_uses_the_delivery_settings(tmp_path: Path) -> None:
    config = init_data_dir(tmp_path, domain="example.com", hostname="mail.example.com")
    text = (
        (tmp_path / "postkontor.toml")
        .read_text()
        .replace('#subaddress_separator = "+"', 'subaddress_separator = "-"')
    )
    (tmp_path / "postkontor.toml").write_text(text)
    config = load_config(tmp_path / "postkontor.toml")
    with open_accounts(config) as accounts:
        accounts.add_user("alice@example.com", "pw")
        assert accounts.resolve("alice-news@example.com").exists
        assert not accounts.resolve("alice+news@example.com").exists


def test_prepare_dev_first_run_and_reruns(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    config = prepare_dev(data, port_base=20000, listen="127.0.0.1", domain="example.test", dns=None)
    assert config.hostname == "mail.example.test"
    assert [(item.kind, item.port) for item in config.listeners] == [
        (ListenerKind.MX, 20025),
        (ListenerKind.SUBMISSION, 20587),
        (ListenerKind.SUBMISSIONS, 20465),
        (ListenerKind.IMAP, 20143),
        (ListenerKind.IMAPS, 20993),
        (ListenerKind.POP3, 20110),
        (ListenerKind.POP3S, 20995),
    ]
    assert config.tls is not None and config.tls.cert == data / "tls" / "cert.pem"
    cert = config.tls.cert.read_bytes()
    with open_accounts(config) as accounts:
        assert accounts.verify_password("demo@example.test", "demo")
        assert [(alias.source, alias.targets) for alias in accounts.list_aliases()] == [
            ("postmaster@example.test", ("demo@example.test",))
        ]
        accounts.add_user("keep@example.test", "pw")

    config = prepare_dev(data, port_base=0, listen="::1", domain="second.test", dns="127.0.0.1:5353")
    assert [(item.address, item.port) for item in config.listeners] == [
        ("::1", 25),
        ("::1", 587),
        ("::1", 465),
        ("::1", 143),
        ("::1", 993),
        ("::1", 110),
        ("::1", 995),
    ]
    assert config.dns_servers == ("127.0.0.1:5353",)
    assert config.hostname == "mail.second.test"
    assert config.tls is not None and config.tls.cert.read_bytes() == cert, "the certificate is kept"
    with open_accounts(config) as accounts:
        assert accounts.list_domains() == ["example.test", "second.test"]
        assert accounts.get_user("keep@example.test") is not None
        assert accounts.verify_password("demo@second.test", "demo")
        assert accounts.resolve("postmaster@second.test").exists


def test_prepare_dev_never_takes_over_a_production_directory(tmp_path: Path) -> None:
    init_data_dir(tmp_path, domain="example.com", hostname="mail.example.com")
    before = (tmp_path / "postkontor.toml").read_text()
    with pytest.raises(AdminError, match="not made by `postkontor dev`"):
        prepare_dev(tmp_path, port_base=10000, listen="127.0.0.1", domain="example.test", dns=None)
    assert (tmp_path / "postkontor.toml").read_text() == before


@pytest.mark.parametrize(
    ("port_base", "listen", "domain", "dns", "message"),
    [
        (10000, "localhost", "example.test", None, "listen address"),
        (65000, "127.0.0.1", "example.test", None, "port base"),
        (-1, "127.0.0.1", "example.test", None, "port base"),
        (10000, "127.0.0.1", "example.test", "dns.example", "nameserver"),
    ],
)
def test_prepare_dev_rejects_bad_options(
    tmp_path: Path, port_base: int, listen: str, domain: str, dns: str | None, message: str
) -> None:
    with pytest.raises(AdminError, match=message):
        prepare_dev(tmp_path / "dev", port_base=port_base, listen=listen, domain=domain, dns=dns)
    assert not (tmp_path / "dev").exists()
