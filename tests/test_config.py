"""Every config error path names the file, the table and the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keyvault.config import find_config
from keyvault.durations import format_duration, parse_duration
from keyvault.errors import ConfigError
from rotation.config import load_config

GOOD = """
default_provider = "local"

[providers.local]
type = "file"
path = ".keyvault/store.db"
master_key_file = ".keyvault/master.key"

[providers.ci]
type = "env"

[policies.default]
max_age = "90d"
warn_age = "80d"
grace = "7d"

[keys."anthropic/prod"]
provider = "local"
policy = "default"
issuer = "generated"
environment = "prod"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keyvault.toml"
    path.write_text(text)
    return path


def test_the_documented_shape_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.default_provider_name() == "local"
    assert config.provider_for("anthropic/prod") == "local"
    assert config.provider_for("unnamed/key") == "local"
    assert config.policy_for("anthropic/prod").max_age == timedelta(days=90)
    assert config.policy_for("unnamed/key").grace == timedelta(days=7)
    assert config.key("anthropic/prod").environment == "prod"
    assert config.resolve_path(Path(".keyvault/store.db")) == tmp_path / ".keyvault/store.db"


def test_unnamed_keys_get_the_default_policy_even_when_not_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[providers.local]\ntype = "file"\n'))
    assert config.policy_for("x").max_age == timedelta(days=90)
    assert config.policy_for("x").effective_warn_age == timedelta(days=72)
    assert config.key("x").issuer == "generated"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this is = = not toml", "not valid TOML"),
        (
            '[providers.local]\ntype = "file"\npth = "x"\n',
            r"\[providers.local\] pth: unknown field",
        ),
        ('[providers.local]\ntype = "sql"\n', r"\[providers.local\]: unknown provider type"),
        ("[providers.local]\npath = 'x'\n", r"\[providers.local\]"),
        (
            '[providers.local]\ntype = "file"\nmaster_key_file = "a"\nmaster_key_env = "B"\n',
            "set only one of",
        ),
        (
            '[providers.local]\ntype = "file"\n[policies.default]\nmax_age = "90 days"\n',
            r"\[policies.default\] max_age: invalid duration '90 days'",
        ),
        (
            '[providers.local]\ntype = "file"\n'
            '[policies.default]\nmax_age = "10d"\nwarn_age = "20d"\n',
            r"\[policies.default\]: warn_age \(20d\) is longer than max_age \(10d\)",
        ),
        (
            '[providers.local]\ntype = "file"\n[policies.default]\ngrace = 7\n',
            r"\[policies.default\] grace: expected a duration",
        ),
        (
            '[providers.local]\ntype = "file"\n[keys."Anthropic/Prod"]\n',
            r'\[keys."Anthropic/Prod"\] \(the key name\): invalid key name',
        ),
        (
            '[providers.local]\ntype = "file"\n[keys."a/b"]\nprovider = "nope"\n',
            r"\[keys.\"a/b\"\] provider 'nope' is not a table under \[providers\]",
        ),
        (
            '[providers.local]\ntype = "file"\n[keys."a/b"]\npolicy = "strict"\n',
            r"policy 'strict' is not a table under \[policies\]",
        ),
        (
            '[providers.local]\ntype = "file"\n[keys."a/b"]\nenvironmnet = "prod"\n',
            r"\[keys.\"a/b\"\] environmnet: unknown field",
        ),
        (
            'default_provider = "x"\n[providers.local]\ntype = "file"\n',
            "default_provider 'x' is not a table",
        ),
        ('[providers.a]\ntype = "file"\n[providers.b]\ntype = "env"\n', "set default_provider"),
        ('colour = "blue"\n', "colour: unknown field"),
        (
            '[providers.ci]\ntype = "env"\nkeys = ["UPPER"]\n',
            r"\[providers.ci\] keys.0: invalid key name",
        ),
    ],
)
def test_errors_name_file_table_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


def test_every_broken_table_is_reported_in_one_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.a]\ntype = "file"\npth = "x"\n'
        '[providers.b]\ntype = "vault"\n'
        '[policies.fast]\ngrace = "soon"\n'
        "[service]\nport = 0\n",
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    lines = str(excinfo.value).splitlines()
    assert [line.removeprefix(f"{path}: ") for line in lines] == [
        "[providers.a] pth: unknown field (check the spelling)",
        "[providers.b] url: required field is missing",
        "[policies.fast] grace: invalid duration 'soon': write a number and a unit (w, d, h, m, "
        "s), e.g. '90d', '12h', '30m' or '1d12h'",
        "service.port: expected `int` >= 1",
    ]  # and no "no providers are configured" echo of the broken provider tables


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[service]\ninterval = "5s"\n', r"^\S+: service.interval: a sweep interval of 5s"),
        ("[policies.x.window]\nhours = 25\n", r"\[policies.x\] window.hours: invalid '25'"),
        ('[issuers.v]\ntype = "http"\n', r"\[issuers.v\] create: required field is missing"),
        ('[issuers.v]\nurl = "x"\n', r"\[issuers.v\]: type is missing"),
        ('[keys."a/b".probe]\nurl = "u"\nexpect = ["ok"]\n', r"probe.expect.0: expected `int`"),
        ('[proxy.p]\nkey = "a/b"\nupstream = "ftp://x"\n', r"\[proxy.p\]: upstream 'ftp://x'"),
        ('[proxy.p]\nkey = "../b"\nupstream = "http://x"\n', r"\[proxy.p\] key: invalid key"),
        ('[providers.local.transit]\nmont = "t"\n', r"\[providers.local\] transit.mont: unknown"),
        ('source = "/etc/passwd"\n', "source: unknown field"),
        ("providers = 3\n", "providers: expected a table"),
        ("[client]\nmax_in_flight = 0\n", r"client.max_in_flight: expected `int` >= 1"),
        ("[client]\nmax_queue = -1\n", r"client.max_queue: expected `int` >= 0"),
        ('[client]\nqueue_timeout = "0s"\n', r"client.queue_timeout: must be longer than zero"),
        ('[client]\ntimeout = "soon"\n', r"client.timeout: invalid duration 'soon'"),
        ("[client.retry]\nattempts = 0\n", r"client.retry.attempts: expected `int` >= 1"),
        (
            '[client.retry]\nmethods = "post"\n',
            r"client.retry.methods: 'post' is not one of 'idempotent'",
        ),
        ("[client.retry]\nstatuses = [200]\n", r"client.retry.statuses.0: expected `int` >= 400"),
        ("[client.retry]\nbackof = 1\n", r"client.retry.backof: unknown field"),
    ],
)
def test_service_and_nested_errors_name_their_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    base = '[providers.local]\ntype = "file"\n' if "providers" not in text[:12] else ""
    if text.startswith("[providers.local."):
        base = '[providers.local]\ntype = "vault"\nurl = "http://x"\n'
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, base + text))


def test_the_library_checks_its_tables_and_leaves_the_service_its_own(tmp_path: Path) -> None:
    """`keyvault.load()` in an app reads the same file the service does: the service's tables
    are the service's to check (every `keyvault` command does), the library's are checked."""
    from keyvault.config import load_config as load_library_config
    from keyvault.registry import KeyVault
    from rotation.config import rotation_config

    text = GOOD + '[issuers.vendor]\ntype = "plugin-only-the-service-has"\n[service]\nport = 1\n'
    library = load_library_config(write(tmp_path, text))
    assert library.provider_for("anthropic/prod") == "local"
    with pytest.raises(TypeError, match=r"rotation\.config\.load_config"):
        rotation_config(KeyVault(library))
    with pytest.raises(ConfigError, match=r"\[providers.local\] pth: unknown field"):
        load_library_config(write(tmp_path, '[providers.local]\ntype = "file"\npth = "x"\n'))
    with pytest.raises(ConfigError, match="colour: unknown field"):
        load_library_config(write(tmp_path, GOOD + 'colour = "blue"\n'))


def test_find_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="keyvault init"):
        find_config(None, {})
    here = write(tmp_path, GOOD)
    assert find_config(None, {}) == here
    other = tmp_path / "other.toml"
    other.write_text(GOOD)
    assert find_config(None, {"KEYVAULT_CONFIG": str(other)}) == other
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(GOOD)
    assert find_config(explicit, {"KEYVAULT_CONFIG": str(other)}) == explicit
    with pytest.raises(
        ConfigError, match=r"missing.toml \(from \$KEYVAULT_CONFIG\) does not exist"
    ):
        find_config(None, {"KEYVAULT_CONFIG": "missing.toml"})
    with pytest.raises(ConfigError, match=r"nope.toml \(from --config\) does not exist"):
        find_config(Path("nope.toml"), {})


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86400),
        ("12h", 43200),
        ("30m", 1800),
        ("45s", 45),
        ("1d12h", 129600),
        ("2w", 1209600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "d", "10", "10x", "1.5d", "-1d", "1d 2h", "d10"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_names_from_the_file_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """A table or field name with control characters (ESC sequences) is shown escaped in
    the error, never raw."""
    text = '[providers."lo\\u001b[31mcal"]\ntype = "file"\n"pa\\u0007th" = "x"\n'
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    message = str(excinfo.value)
    assert "\x1b" not in message and "\x07" not in message
    assert '[providers."lo\\x1b[31mcal"] pa\\x07th: unknown field' in message
