"""`postkontor.toml`: every mistake is one line naming file, line and key; `render_config` reads back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkontor.config import (
    ConfigError,
    DeliveryConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerKind,
    TimeoutsConfig,
    load_config,
    parse_config,
    render_config,
)

MX = '[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = 2525\n'
H = 'hostname = "m.test"\n'
TLS = '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postkontor.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return caught.value


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'hostname = "mail.example.com"\n{MX}'))
    assert config.hostname == "mail.example.com"
    assert config.listeners == (ListenerConfig(ListenerKind.MX, "127.0.0.1", 2525),)
    assert config.tls is None
    assert config.limits == LimitsConfig()
    assert config.timeouts == TimeoutsConfig()
    assert config.delivery == DeliveryConfig()
    assert config.dns_servers == ()
    assert config.workers == 0 and config.worker_count >= 1
    assert config.data_dir == tmp_path
    assert config.source == tmp_path / "postkontor.toml"


def test_the_example_from_the_lead(tmp_path: Path) -> None:
    text = f'hostname = "mail.corp.test"\n\n[limits]\nmax_recipients = "ten"\n\n{MX}'
    error = error_of(tmp_path, text)
    expected = '[limits] max_recipients: expected a positive integer, got "ten"'
    assert str(error) == f"{tmp_path / 'postkontor.toml'}:4: {expected}"
    assert (error.line, error.key) == (4, "[limits] max_recipients")


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [
        (f"hostname = 5\n{MX}", 1, "hostname", "expected a string"),
        (f'hostname = "not a host"\n{MX}', 1, "hostname", "DNS host name"),
        (f'# comment\n\nhostnme = "mail.x.test"\n{MX}', 3, "hostnme", 'did you mean "hostname"'),
        (f"{H}listeners = []\n{MX}", 2, "listeners", 'did you mean "listener"'),
        (f"{H}", 1, "listener", "at least one [[listener]]"),
        (f'{H}\n[listener]\nkind = "mx"\n', 3, "listener", "double brackets"),
        (f'{H}{MX}[[listener]]\nkind = "smtp"\n', 7, "[[listener]] kind", "mx, submission"),
        (
            f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "localhost"\nport = 25\n',
            8,
            "[[listener]] address",
            "IP address",
        ),
        (
            f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "::1"\nport = 70000\n',
            9,
            "[[listener]] port",
            "from 1 to 65535",
        ),
        (f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "::1"\n', 6, "[[listener]] port", "missing"),
        (
            f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "::1"\nport = 1\nlabel = "x"\n',
            10,
            "[[listener]] label",
            "unknown key",
        ),
        (
            f'{H}{MX}[[listener]]\nkind = "submission"\naddress = "::1"\nport = 587\n',
            7,
            "[[listener]] kind",
            "needs a [tls] table",
        ),
        (
            f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = 2525\n',
            9,
            "[[listener]] port",
            "clashes with the [[listener]] at line 2",
        ),
        (
            f'{H}{MX}[[listener]]\nkind = "mx"\naddress = "0.0.0.0"\nport = 2525\n',
            9,
            "[[listener]] port",
            "clashes",
        ),
        (f"{H}workers = -1\n{MX}", 2, "workers", "from 0 to 256"),
        (f'{H}workers = "auto"\n{MX}', 2, "workers", 'got "auto"'),
        (f'{H}dns = ["ns.example"]\n{MX}', 2, "dns", "IP"),
        (f'{H}dns = "127.0.0.1"\n{MX}', 2, "dns", "expected an array"),
        (f'{H}dns = ["1.2.3.4:0"]\n{MX}', 2, "dns", "IP:PORT"),
        (f'{H}{MX}[tls]\ncert = "c.pem"\n', 6, "[tls] key", "missing"),
        (f'{H}{MX}[tls]\ncert = "c.pem"\nkey = ""\n', 8, "[tls] key", "file path"),
        (f'{H}{MX}[tls]\ncert = "c.pem"\nkey = "k"\nchain = "x"\n', 9, "[tls] chain", "unknown"),
        (f"{H}{MX}[limits]\nmax_recipients = 0\n", 7, "[limits] max_recipients", "positive"),
        (f"{H}{MX}[limits]\nmax_errors = 1.5\n", 7, "[limits] max_errors", "positive integer"),
        (f"{H}{MX}[limits]\nmax_errors = true\n", 7, "[limits] max_errors", "got true"),
        (
            f"{H}{MX}[limits]\nmax_conections = 5\n",
            7,
            "[limits] max_conections",
            'did you mean "max_connections"',
        ),
        (
            f"{H}{MX}[limits]\nauth_failure_window = -1\n",
            7,
            "[limits] auth_failure_window",
            "positive number",
        ),
        (f"{H}{MX}[timeouts]\ncommand = nan\n", 7, "[timeouts] command", "positive number"),
        (f"{H}{MX}[timeouts]\ndata = inf\n", 7, "[timeouts] data", "got inf"),
        (f'{H}{MX}[timeouts]\ncommand = "5m"\n', 7, "[timeouts] command", 'got "5m"'),
        (f'{H}{MX}[delivery]\nsubaddress_separator = "#"\n', 7, "[delivery] subaddress_separator", 'got "#"'),
        (f"{H}{MX}[delivery]\nmax_alias_depth = 101\n", 7, "[delivery] max_alias_depth", "from 1 to 100"),
        (f"{H}{MX}limits = 3\n", 6, "[[listener]] limits", "unknown key"),
        (f"{H}limits = 3\n{MX}", 2, "limits", "expected a table"),
        (f"{H}limits.max_errors = 0\n{MX}", 2, "[limits] max_errors", "positive"),
        (f"{H}{MX}\n[limits]\n# max_errors = 0\n\nmax_errors = -3\n", 10, "[limits] max_errors", "got -3"),
    ],
)
def test_semantic_errors_name_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, reason: str
) -> None:
    error = error_of(tmp_path, text)
    assert error.line == line, str(error)
    assert error.key == key, str(error)
    assert reason in error.reason, str(error)
    assert f":{line}: {key}: " in str(error)


def test_locator_skips_multiline_strings_and_arrays(tmp_path: Path) -> None:
    text = f'{H}dns = [\n  "127.0.0.1",\n  ["nested"],\n]\n{MX}'
    assert error_of(tmp_path, text).line == 2
    text = f'{H}{MX}[[listener]]\nname = """\nport = 1\n[[listener]]\n"""\nkind = "mx"\n'
    text += 'address = "::"\nport = 0\n'
    error = error_of(tmp_path, text)
    assert (error.line, error.key) == (13, "[[listener]] port")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (f"{H}\nport = \n", 3, "port: invalid TOML: Invalid value"),
        (f"{H}[a]\n[a]\n", 3, "invalid TOML: Cannot declare"),
        (f'{H}hostname = "n.test"\n', 2, "hostname: set twice (first at line 1)"),
        (f'{H}dns = ["a",\n', 2, "invalid TOML"),
        ('hostname = "m.test\n', 1, "hostname: invalid TOML"),
    ],
)
def test_syntax_errors_take_the_line_from_tomllib(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    error = error_of(tmp_path, text)
    assert error.line == line, str(error)
    assert fragment in str(error)


def test_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "postkontor.toml"
    path.write_bytes(H.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r":2: invalid TOML: the file is not UTF-8"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_every_limit_and_timeout_can_be_set(tmp_path: Path) -> None:
    limits = {f.name: (7 if isinstance(f.default, int) else 2.5) for f in dataclasses.fields(LimitsConfig)}
    timeouts = {f.name: 3 for f in dataclasses.fields(TimeoutsConfig)}  # integers are fine for seconds
    text = f"{H}{MX}[limits]\n"
    text += "".join(f"{name} = {value}\n" for name, value in limits.items())
    text += "[timeouts]\n" + "".join(f"{name} = {value}\n" for name, value in timeouts.items())
    text += '[delivery]\nsubaddress_separator = ""\nmax_alias_depth = 100\n'
    config = load_config(write(tmp_path, text))
    assert config.limits == LimitsConfig(**limits)  # type: ignore[arg-type]
    assert config.timeouts == TimeoutsConfig(**{name: 3.0 for name in timeouts})
    assert isinstance(config.timeouts.command, float)
    assert config.delivery == DeliveryConfig(subaddress_separator="", max_alias_depth=100)


def test_workers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"{H}workers = 3\n{MX}"))
    assert config.workers == 3 and config.worker_count == 3


def test_paths_are_relative_to_the_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, f"{H}{TLS}{MX}")
    config = load_config(path)
    assert config.tls is not None
    assert config.tls.cert == tmp_path / "tls" / "cert.pem"
    other = tmp_path / "elsewhere"
    config = load_config(path, other)
    assert config.tls is not None and config.tls.key == other / "tls" / "key.pem"
    assert config.data_dir == other
    absolute = write(tmp_path, f'{H}[tls]\ncert = "/etc/c.pem"\nkey = "k.pem"\n{MX}')
    config = load_config(absolute)
    assert config.tls is not None and config.tls.cert == Path("/etc/c.pem")


def test_nameservers_are_canonical(tmp_path: Path) -> None:
    text = f'{H}dns = ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53", "[0:0::2]"]\n{MX}'
    config = load_config(write(tmp_path, text))
    assert config.dns_servers == ("127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53", "::2")


def test_ipv4_and_ipv6_wildcards_may_share_a_port(tmp_path: Path) -> None:
    text = f"{H}"
    expected = [("0.0.0.0", 25), ("::", 25), ("127.0.0.1", 26)]
    for address, port in expected:
        text += f'[[listener]]\nkind = "mx"\naddress = "{address}"\nport = {port}\n'
    config = load_config(write(tmp_path, text))
    assert [(item.address, item.port) for item in config.listeners] == expected


def test_render_config_round_trip(tmp_path: Path) -> None:
    listeners = [
        ListenerConfig(ListenerKind.MX, "0.0.0.0", 25),
        ListenerConfig(ListenerKind.SUBMISSION, "::", 587, name='alt "submission" ü'),
        ListenerConfig(ListenerKind.SUBMISSIONS, "192.0.2.1", 465),
    ]
    text = render_config("mail.example.com", listeners, dns=["192.0.2.53", "[2001:db8::53]:5353"])
    config = load_config(write(tmp_path, text))
    assert config.hostname == "mail.example.com"
    assert config.listeners == tuple(listeners)
    assert config.dns_servers == ("192.0.2.53", "[2001:db8::53]:5353")
    assert config.tls is not None and config.tls.cert == tmp_path / "tls" / "cert.pem"
    assert config.limits == LimitsConfig()
    assert (config.timeouts, config.delivery) == (TimeoutsConfig(), DeliveryConfig())


def test_rendered_config_documents_every_setting() -> None:
    text = render_config("mail.example.com", [ListenerConfig(ListenerKind.MX, "0.0.0.0", 25)], tls=False)
    for cls in (LimitsConfig, TimeoutsConfig, DeliveryConfig):
        for field in dataclasses.fields(cls):
            assert f"\n#{field.name} = " in text, field.name
    for section in ("[limits]", "[timeouts]", "[delivery]", "#[tls]", "#dns = ", "#workers = 0"):
        assert section in text
    assert sum(line.startswith("#") for line in text.splitlines()) > 30


def test_uncommenting_a_default_gives_the_same_config(tmp_path: Path) -> None:
    text = render_config("mail.example.com", [ListenerConfig(ListenerKind.MX, "0.0.0.0", 25)])
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and " = " in line and not line.startswith(("# ", "#dns")) else line
        for line in text.splitlines()
    )
    assert uncommented.count("\nmax_") > 5
    assert load_config(write(tmp_path, uncommented)) == load_config(write(tmp_path, text))


def test_render_without_tls_and_a_submission_listener_is_refused(tmp_path: Path) -> None:
    text = render_config("m.test", [ListenerConfig(ListenerKind.SUBMISSION, "::1", 587)], tls=False)
    error = error_of(tmp_path, text)
    assert error.key == "[[listener]] kind"


_kinds = st.sampled_from(list(ListenerKind))
_addresses = st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "::1", "192.0.2.7", "2001:db8::1"])
_names = st.text(st.characters(categories=["L", "N", "P"], include_characters=" "), max_size=20)
_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hostname=st.lists(_labels, min_size=1, max_size=4).map(".".join),
    ports=st.lists(st.integers(1, 65535), min_size=1, max_size=4, unique=True),
    kinds=st.lists(_kinds, min_size=4, max_size=4),
    addresses=st.lists(_addresses, min_size=4, max_size=4),
    names=st.lists(_names, min_size=4, max_size=4),
)
def test_render_config_round_trip_property(
    tmp_path: Path,
    hostname: str,
    ports: list[int],
    kinds: list[ListenerKind],
    addresses: list[str],
    names: list[str],
) -> None:
    # distinct ports, so no two listeners can clash whatever their addresses
    listeners = [ListenerConfig(kinds[i], addresses[i], port, names[i]) for i, port in enumerate(ports)]
    config = parse_config(render_config(hostname, listeners), source=tmp_path / "p.toml", data_dir=tmp_path)
    assert config.hostname == hostname
    assert config.listeners == tuple(listeners)


_FRAGMENTS = [
    'hostname = "mail.example.com"',
    "[tls]",
    'cert = "c.pem"',
    'key = "k.pem"',
    "[[listener]]",
    'kind = "mx"',
    'kind = "submission"',
    'address = "127.0.0.1"',
    'address = "::"',
    "port = 25",
    "port = 99999",
    "[limits]",
    "max_recipients = 5",
    "max_errors = -1",
    "[timeouts]",
    "command = 1.5",
    "data = inf",
    "[delivery]",
    'subaddress_separator = "-"',
    'dns = ["127.0.0.1:53"]',
    'name = """',
    "x = [",
    "]",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(),
        st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=20).map("\n".join),
    )
)
def test_arbitrary_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message
