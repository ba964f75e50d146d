"""The ``keyvault`` command.

Every command maps errors once, here: a ``KeyvaultError`` prints one line on stderr and
exits with its class's code (see ``keyvault.errors.EXIT_CODES``); ``--debug`` adds the
traceback. Values never appear in output except through ``get --reveal``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from keyvault.access import AccessLog, reading
from keyvault.config import FileProviderConfig, find_config
from keyvault.crypto import MasterKey
from keyvault.durations import parse_duration
from keyvault.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    InvalidKeyValue,
    KeyvaultError,
    ReadOnlyError,
)
from keyvault.extras import DISTRIBUTION, missing_extra
from keyvault.masterkey import private_dir, write_key_file
from keyvault.model import (
    MAX_VALUE_BYTES,
    BrokenKey,
    KeyInfo,
    check_ref,
    check_value,
    utcnow,
    validate_name,
)
from keyvault.providers import build_provider
from keyvault.registry import KeyVault
from keyvault.secret import SecretValue
from rotation import render, report
from rotation.audit import AuditRow
from rotation.audit import audit as run_audit
from rotation.config import RotationConfig, check_interval, load_config, rotation_config
from rotation.engine import Outcome, Result, Rotator
from rotation.rekey import rekey as rekey_store
from rotation.status import SEVERITY, Status
from rotation.sweep import sweep
from rotation.tokens import generate_token

F = TypeVar("F", bound=Callable[..., Any])

STARTER_CONFIG = """\
# keyvault configuration: where keys live and how old they may get.
# It never holds a secret value, only where to find one.
default_provider = "local"

[providers.local]
type = "file"                              # the embedded encrypted store
path = ".keyvault/store.db"
master_key_file = ".keyvault/master.key"   # or: master_key_env = "KEYVAULT_MASTER_KEY"

[policies.default]
max_age = "90d"
warn_age = "80d"
grace = "7d"
"""


class State:
    """What the group options leave for the commands: the config path and a lazy KeyVault."""

    def __init__(self, config_path: Path | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._kv: KeyVault | None = None
        #: what a command opened that must be closed when it ends (issuers' HTTP clients)
        self.closing: list[Callable[[], None]] = []

    @property
    def kv(self) -> KeyVault:
        if self._kv is None:
            self._kv = KeyVault(load_config(find_config(self.config_path)))
        return self._kv

    def close(self) -> None:
        for close in self.closing:
            close()
        if self._kv is not None:
            self._kv.close()


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Map the error tree to one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().find_object(State)
        debug = state.debug if state is not None else False
        try:
            return func(*args, **kwargs)
        except KeyvaultError as exc:
            if debug:
                traceback.print_exc()
            fail(str(exc), exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            fail(f"unexpected {type(exc).__name__} (run with --debug for details)", 1)
        finally:
            if state is not None:
                state.close()

    return wrapper  # type: ignore[return-value]


format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for machines",
)


multiline_option = click.option(
    "--multiline",
    is_flag=True,
    help="allow line breaks in the value (only for keys never sent in an HTTP header)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),  # a directory is refused by find_config, in one line
    envvar=None,
    help="config file (default: $KEYVAULT_CONFIG, then ./keyvault.toml)",
)
@click.option("--debug", is_flag=True, help="show tracebacks on errors")
@click.version_option(package_name=DISTRIBUTION)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """Key management and zero-downtime rotation for API keys.

    \b
    Exit codes: 0 ok, 1 check failed, 2 usage or config error, 3 key not found,
    4 auth or permission denied, 5 backend unavailable, 6 integrity failure,
    7 conflict with a concurrent writer.
    """
    ctx.obj = State(config_path, debug)


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    help="where to create keyvault.toml and .keyvault/",
)
@click.pass_obj
@handles_errors
def init(state: State, directory: Path) -> None:
    """Create keyvault.toml, an embedded store and a 0600 master key file; with an existing
    config (``--config``), create the stores it names that do not exist yet.

    Only ``init`` creates a store: every other command refuses a missing one, so a deleted
    store is never silently replaced by an empty one. What it makes is private whatever the
    umask: directories 0700, the master key and store 0600, the config 0644.
    """
    if state.config_path is not None:
        _init_stores(load_config(find_config(state.config_path)))
        return
    config_path = directory / "keyvault.toml"
    key_path = directory / ".keyvault" / "master.key"
    store_path = directory / ".keyvault" / "store.db"
    existing = [path for path in (config_path, key_path, store_path) if path.exists()]
    if existing:
        raise ConfigError(
            f"refusing to overwrite {', '.join(map(str, existing))}: keyvault is already "
            "initialised here (to create a configured store that is missing: "
            "`keyvault --config keyvault.toml init`)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        private_dir(key_path.parent)
        write_key_file(key_path, [MasterKey.generate()])
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # the mode above is masked by the umask
            handle.write(STARTER_CONFIG)
    except OSError as exc:
        raise ConfigError(
            f"cannot initialise {directory}: {exc.strerror} ({exc.filename})"
        ) from None
    build_provider(load_config(config_path.resolve()), "local", create=True).close()
    click.echo(f"created {config_path}, {store_path} and {key_path} (mode 0600)")
    click.echo("next: `keyvault put NAME` (value on stdin) or `keyvault put NAME --generate`")


def _init_stores(config: RotationConfig) -> None:
    created = []
    for name, settings in config.providers.items():
        if isinstance(settings, FileProviderConfig):
            path = config.resolve_path(settings.path)
            if not path.exists():
                private_dir(path.parent)
                build_provider(config, name, create=True).close()
                created.append(f"{path} ({name})")
    if not created:
        raise ConfigError(f"{config.label}: every file store it names exists; nothing to create")
    click.echo(f"created {', '.join(created)}")


def _read_value_from_stdin(*, multiline: bool = False) -> SecretValue:
    """The value on stdin (one trailing newline dropped), checked before anything is
    written: UTF-8, not blank, not too large, no control characters."""
    if sys.stdin.isatty():
        raw = str(click.prompt("value", hide_input=True, confirmation_prompt=True))
    else:
        data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 3)
        if len(data) > MAX_VALUE_BYTES + 2:
            raise InvalidKeyValue(
                f"the value on stdin is larger than {MAX_VALUE_BYTES} bytes, the most "
                "keyvault stores"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidKeyValue(
                f"the value on stdin is not UTF-8 text (byte {exc.start}); pipe the key as "
                "text, e.g. base64 of binary material"
            ) from None
        raw = text.removesuffix("\n").removesuffix("\r")
    if not raw:
        raise InvalidKeyValue("no value on stdin (pipe the value in, or use --generate)")
    return check_value(raw, multiline=multiline)


def _parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO-8601 time, or an age such as ``120d`` (that long before now)."""
    if text is None:
        return None
    try:
        return utcnow() - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is neither an ISO-8601 time nor an age like '120d'"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@cli.command()
@click.argument("name")
@click.option("--generate", is_flag=True, help="create a random token instead of reading stdin")
@click.option("--provider", help="provider to create the key in (default: from config)")
@click.option("--environment", help="environment label, e.g. prod or dev")
@click.option(
    "--created-at",
    help="when a key imported from elsewhere was created: ISO-8601, or an age such as 120d",
)
@click.option("--ref", help="the issuer's id for this value, so a later rotation can revoke it")
@multiline_option
@format_option
@click.pass_obj
@handles_errors
def put(
    state: State,
    name: str,
    generate: bool,
    provider: str | None,
    environment: str | None,
    created_at: str | None,
    ref: str | None,
    multiline: bool,
    output_format: str,
) -> None:
    """Create key NAME from a value on stdin (never from an argument)."""
    validate_name(name)
    when = _parse_time(created_at, "--created-at")
    if when is not None and when > utcnow():
        raise ConfigError("--created-at is in the future")
    if ref is not None:
        check_ref(ref)
    value = (
        SecretValue(generate_token()) if generate else _read_value_from_stdin(multiline=multiline)
    )
    info = state.kv.put(
        name,
        value,
        provider=provider,
        environment=environment,
        created_at=when,
        ref=ref,
        multiline=multiline,
    )
    if output_format == "json":
        click.echo(render.dumps(render.key_json(info)))
    else:
        click.echo(f"created {info.name} in {info.provider}: {info.current.fingerprint}")


@cli.command()
@click.argument("name")
@click.option("--provider", help="provider to read from (default: from config)")
@click.option("--reveal", is_flag=True, help="print only the raw primary value, for piping")
@format_option
@click.pass_obj
@handles_errors
def get(state: State, name: str, provider: str | None, reveal: bool, output_format: str) -> None:
    """Show key NAME's versions, fingerprints and ages (never the value without --reveal)."""
    if reveal:
        with reading("reveal"):
            keyset = state.kv.get_keyset(name, provider=provider)
        sys.stdout.write(keyset.primary.secret.reveal() + "\n")
        return
    info = state.kv.describe(name, provider=provider)
    if output_format == "json":
        data = render.key_json(info)
        if info.pending is None:
            del data["pending"]
        click.echo(render.dumps(data))
    else:
        render.console().print(render.key_table(info, utcnow()))


@cli.command("list")
@click.option("--provider", help="list only this provider")
@format_option
@click.pass_obj
@handles_errors
def list_keys(state: State, provider: str | None, output_format: str) -> None:
    """One row per key: name, provider, primary fingerprint, age."""
    now = utcnow()
    broken: list[BrokenKey] = []
    problems: list[KeyInfo] = []
    failures: list[tuple[str, KeyvaultError]] = []

    def keys() -> Iterator[KeyInfo]:
        """Every readable key, streamed; what cannot be read is kept aside to report."""
        for name in [provider] if provider else state.kv.provider_names():
            try:
                for info in state.kv.provider(name).iter_keys():
                    if isinstance(info, BrokenKey):
                        broken.append(info)
                        continue
                    if info.problem is not None:
                        problems.append(info)
                    yield info
            except KeyvaultError as exc:
                failures.append((name, exc))

    if output_format == "json":
        out = sys.stdout
        out.write("[")
        for index, info in enumerate(keys()):
            out.write(
                ("," if index else "") + "\n  " + render.dumps(render.list_row_json(info, now))
            )
        out.write("\n]\n")
    else:
        render.console().print(render.list_table(list(keys()), now))
    codes = []
    for name, error in failures:
        click.echo(f"error: provider {name}: {error}", err=True)
        codes.append(error.exit_code)
    for key in broken:
        click.echo(f"error: key {key.name} ({key.provider}): {key.error}", err=True)
        codes.append(key.error.exit_code)
    for info in problems:
        click.echo(f"error: key {info.name} ({info.provider}): {info.problem}", err=True)
        codes.append(IntegrityError.exit_code)
    if codes:
        sys.exit(max(codes))


def _outcome_exit_code(outcomes: list[Outcome], *, named: bool) -> int:
    """The worst exit code among the outcomes. A key named on the command line that cannot
    be rotated here (read-only) is a usage error; ``--all`` only reports it."""
    codes = [
        (o.error.exit_code if o.error is not None else 1)
        for o in outcomes
        if o.result in (Result.FAILED, Result.NEEDS_STAGING)
    ]
    if named:
        codes += [ReadOnlyError.exit_code for o in outcomes if o.result == Result.READ_ONLY]
    return max(codes, default=0)


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """SIGINT sets an event the rotation loop checks between keys, so the step in hand
    finishes and the results so far are printed; a second SIGINT interrupts at once."""
    stop = threading.Event()

    def interrupted(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        click.echo("interrupted: finishing the key in hand, then stopping", err=True)

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only: nothing to install
        return
    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_keys", is_flag=True, help="every key of every provider")
@click.option("--force", is_flag=True, help="rotate now, whatever the key's age or window")
@click.option("--dry-run", is_flag=True, help="print what would happen; change nothing")
@format_option
@click.pass_obj
@handles_errors
def rotate(
    state: State,
    names: tuple[str, ...],
    all_keys: bool,
    force: bool,
    dry_run: bool,
    output_format: str,
) -> None:
    """Advance the rotation of each due key: create, test, promote, retire.

    Interrupted (Ctrl-C), it finishes the key in hand, prints what it did and exits 130.
    """
    if bool(names) == all_keys:
        raise ConfigError("name the keys to rotate, or pass --all (not both)")
    for name in names:
        validate_name(name)
    kv = state.kv
    rotator = Rotator(kv)
    state.closing.append(rotator.close)
    unreadable = False
    with _stop_on_interrupt() as stop:
        if all_keys:
            with _progress_bar("rotating") as progress:
                swept = sweep(
                    kv,
                    rotator,
                    force=force,
                    dry_run=dry_run,
                    stop=stop,
                    concurrency=rotation_config(kv).service.sweep_concurrency,
                    progress=progress,
                )
            outcomes = swept.outcomes
            if swept.outcomes:
                click.echo(
                    f"advanced {len(swept.outcomes)} key(s) in {swept.seconds:.1f}s "
                    f"({swept.rate:.1f} keys/s)",
                    err=True,
                )
            for error in swept.errors:
                click.echo(f"error: {error}", err=True)
            for row in swept.rows:
                if row.status == Status.ERROR:
                    click.echo(f"error: {_row_label(row)}: {row.note}", err=True)
                    unreadable = True
        else:
            outcomes = []
            for name in names:
                if stop.is_set():
                    break
                outcomes.append(rotator.advance(name, force=force, dry_run=dry_run))
    if output_format == "json":
        click.echo(render.dumps([render.outcome_json(o) for o in outcomes]))
    else:
        render.console().print(render.outcome_table(outcomes, dry_run=dry_run))
    if stop.is_set():
        sys.exit(130)
    code = _outcome_exit_code(outcomes, named=not all_keys)
    if unreadable:
        code = max(code, 5)
    if code:
        sys.exit(code)


@cli.command()
@click.argument("name")
@click.option("--provider", help="provider of the key (default: from config)")
@format_option
@click.pass_obj
@handles_errors
def history(state: State, name: str, provider: str | None, output_format: str) -> None:
    """Every version of key NAME the backend knows of, newest first: fingerprint, stage,
    created, promoted, retired, whether its issuer revoked it, its issuer id and who did
    each step. Never a value."""
    validate_name(name)
    records = state.kv.provider_for(name, provider).history(name)
    if output_format == "json":
        click.echo(render.dumps([render.record_json(r) for r in records]))
    else:
        render.console().print(render.history_table(name, records))


@cli.command()
@click.argument("name")
@format_option
@click.pass_obj
@handles_errors
def rollback(state: State, name: str, output_format: str) -> None:
    """Make key NAME's previous (secondary) key current again, during its grace period.

    Refused without a previous key, when the previous key no longer works upstream, and on
    a read-only provider. The demoted key stays valid for a full grace period; the restored
    key's age counts from now, so the next sweep does not rotate it at once (`rotate
    --force` does).
    """
    validate_name(name)
    rotator = Rotator(state.kv)
    state.closing.append(rotator.close)
    info = rotator.rollback(name)
    if output_format == "json":
        click.echo(render.dumps(render.key_json(info)))
    else:
        click.echo(
            f"rolled back {name}: primary {info.current.fingerprint}, previous "
            f"{info.previous.fingerprint if info.previous else 'none'}"
        )


@cli.command()
@click.argument("name")
@format_option
@click.pass_obj
@handles_errors
def discard(state: State, name: str, output_format: str) -> None:
    """Drop key NAME's pending version without promoting it: a value staged by mistake, or
    one another tool put there (which rotation never promotes). The issuer is not called."""
    validate_name(name)
    backend = state.kv.provider_for(name)
    info = backend.describe(name)
    if info.pending is None:
        raise ConfigError(f"key {name!r} has no pending version to discard")
    dropped = info.pending
    after = backend.discard_pending(name, pending_version=dropped.version)
    if output_format == "json":
        click.echo(render.dumps(render.key_json(after)))
    else:
        click.echo(f"discarded pending version {dropped.version} ({dropped.fingerprint}) of {name}")


@cli.command()
@click.argument("name")
@click.option(
    "--revoked-by-hand",
    is_flag=True,
    help="do not call the issuer: you revoked the previous key yourself (logged)",
)
@format_option
@click.pass_obj
@handles_errors
def retire(state: State, name: str, revoked_by_hand: bool, output_format: str) -> None:
    """Retire key NAME's previous (secondary) version now, before its grace period ends.

    The issuer revokes it first, as the rotation job would. With --revoked-by-hand the
    issuer is not called: for a key the issuer cannot revoke (no recorded id, or a damaged
    record) that you have revoked upstream yourself. Either way the step is logged.
    """
    validate_name(name)
    rotator = Rotator(state.kv)
    state.closing.append(rotator.close)
    info = rotator.retire_now(name, revoked_by_hand=revoked_by_hand)
    if output_format == "json":
        click.echo(render.dumps(render.key_json(info)))
    else:
        click.echo(f"retired the previous version of {name}; primary {info.current.fingerprint}")


@cli.command()
@click.argument("name")
@click.option("--replace", is_flag=True, help="swap out a pending key already staged")
@click.option("--provider", help="provider of the key (default: from config)")
@multiline_option
@format_option
@click.pass_obj
@handles_errors
def stage(
    state: State,
    name: str,
    replace: bool,
    provider: str | None,
    multiline: bool,
    output_format: str,
) -> None:
    """Stage the next value of key NAME (on stdin) for the rotation job to test and promote."""
    validate_name(name)
    value = _read_value_from_stdin(multiline=multiline)
    backend = state.kv.provider_for(name, provider)
    info = backend.describe(name)
    # every check before any write: a refused value leaves a staged key where it was
    for stage_name, held in (("primary", info.current), ("secondary", info.previous)):
        if held is not None and value.fingerprint == held.fingerprint:
            raise ConfigError(f"that value is already key {name!r}'s {stage_name}")
    replaced = None
    if info.pending is not None:
        if value.fingerprint == info.pending.fingerprint:
            raise ConfigError(f"that value is already staged for key {name!r}")
        if not replace:
            raise ConflictError(
                f"key {name!r} already has pending key {info.pending.fingerprint}; "
                "pass --replace to discard it"
            )
        replaced = info.pending.version
    staged = backend.stage(name, value, replace=replaced)
    if output_format == "json":
        click.echo(render.dumps(render.key_json(staged)))
    else:
        assert staged.pending is not None
        click.echo(
            f"staged {staged.pending.fingerprint} as pending version {staged.pending.version} of "
            f"{name}; `keyvault rotate {name}` (or the service) tests and promotes it"
        )


@cli.command()
@click.option("--provider", help="the file provider to rekey (default: every file provider)")
@click.pass_obj
@handles_errors
def rekey(state: State, provider: str | None) -> None:
    """Rotate the embedded store's master key; resumable if interrupted."""
    config = load_config(find_config(state.config_path))
    names = (
        [provider]
        if provider
        else [
            name
            for name, settings in config.providers.items()
            if isinstance(settings, FileProviderConfig)
        ]
    )
    if not names:
        raise ConfigError("no file provider to rekey")
    for name in names:
        report = rekey_store(config, name)
        click.echo(
            f"{name}: {report.resealed} values re-encrypted under {report.new_key_id}; "
            f"retired {', '.join(report.old_key_ids) or 'nothing'}"
        )
        if report.note:
            click.echo(f"{name}: {report.note}")


@cli.command()
@click.option(
    "--port",
    type=int,
    help="port for /healthz and /metrics (default: config, 9464; 0 picks a free one)",
)
@click.option("--host", help="address to listen on (default: config, 127.0.0.1)")
@click.option("--interval", help="time between sweeps, e.g. 1h, 15m (default: config, 1h)")
@click.pass_obj
@handles_errors
def serve(state: State, port: int | None, host: str | None, interval: str | None) -> None:
    """Run the rotation service: a sweep at start and on every interval."""
    try:
        from rotation.service import Service
    except ImportError:
        raise missing_extra("keyvault serve", "service") from None

    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is 0..65535 (0 picks a free one)")
    kv = state.kv
    settings = rotation_config(kv).service
    every: timedelta = settings.interval
    if interval is not None:
        try:
            every = check_interval(parse_duration(interval))
        except ValueError as exc:
            raise ConfigError(f"--interval: {exc}") from None
    service = Service(
        kv,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        interval=every,
    )
    sys.exit(service.run_until_signalled())


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--admin",
    default="127.0.0.1:9465",
    show_default=True,
    help="HOST:PORT for /healthz and /metrics (apart from the proxied paths)",
)
@click.pass_obj
@handles_errors
def proxy(state: State, names: tuple[str, ...], admin: str) -> None:
    """Run the local reverse proxies of [proxy.NAME] tables (all, or NAMES): each adds its
    key's current value to every request, for apps in any language. SIGTERM drains."""
    try:
        from keyvault.proxy.server import serve
    except ImportError:
        raise missing_extra("keyvault proxy", "proxy") from None
    from rotation import logs

    logs.configure()
    sys.exit(serve(state.kv, names, admin=admin))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@format_option
@click.pass_obj
@handles_errors
def scan(state: State, paths: tuple[Path, ...], output_format: str) -> None:
    """Find hard-coded keys in PATHS (default: .): every value keyvault holds, and well-known
    key shapes. Reports file, line and fingerprint, never the text. Exit 1 on a finding."""
    from rotation.scan import scan as run_scan

    findings, notes = run_scan(state.kv, list(paths) or [Path(".")])
    if output_format == "json":
        click.echo(render.dumps([dataclasses.asdict(f) for f in findings]))
    else:
        for f in findings:
            what = f"key {f.key} ({f.stage})" if f.kind == "key" else f.kind
            click.echo(f"{f.path}:{f.line}: {what} {f.fingerprint}")
        click.echo(f"scan: {len(findings)} finding(s)", err=True)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if findings:
        sys.exit(1)


_SIGNALS = ("TERM", "INT", "HUP", "USR1", "USR2", "QUIT")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--env",
    "bindings",
    multiple=True,
    metavar="VAR=KEY",
    help="set VAR to key KEY's current primary in the command's environment (repeatable)",
)
@click.option("--watch", is_flag=True, help="restart the command when a key's primary changes")
@click.option("--interval", help="with --watch: how often to check (default: the cache TTL)")
@click.option(
    "--restart-signal",
    type=click.Choice(_SIGNALS),
    default="TERM",
    show_default=True,
    help="with --watch: the signal that asks the command to stop before its restart",
)
@click.option(
    "--restart-grace",
    default="10s",
    show_default=True,
    help="with --watch: how long to wait for it to stop before SIGKILL",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@handles_errors
def run(
    state: State,
    bindings: tuple[str, ...],
    watch: bool,
    interval: str | None,
    restart_signal: str,
    restart_grace: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with keys in its environment: keyvault run --env VAR=KEY -- COMMAND.

    The values go to the command's environment only (never its arguments or this output).
    The environment guard applies (exit 4, nothing started); a missing key is exit 3.
    Signals are forwarded and the command's exit status is run's (128+N for signal N).
    """
    from rotation import logs
    from rotation.run import Runner, parse_bindings

    parsed = parse_bindings(bindings)
    logs.configure()  # names and fingerprints on stderr; never a value
    every = None
    if watch:
        try:
            every = (
                parse_duration(interval) if interval else state.kv.config.client.cache_ttl
            ).total_seconds()
            grace = parse_duration(restart_grace).total_seconds()
        except ValueError as exc:
            raise ConfigError(f"--interval/--restart-grace: {exc}") from None
        if every < 1:
            raise ConfigError("--interval: at least 1s")
    else:
        grace = 10.0
    runner = Runner(
        state.kv,
        parsed,
        command,
        restart_signal=getattr(signal, f"SIG{restart_signal}"),
        restart_grace=grace,
    )
    sys.exit(runner.run(watch_interval=every))


AUDIT_FORMATS = ("table", "json", "csv", "markdown", "html")
#: a terminal shows the most urgent keys and a summary: a person never waits on a fleet's
#: table (the whole table when piped, with --output, or with --all-rows)
TERMINAL_ROWS = 50


@cli.command()
@click.option("--provider", help="audit only this provider")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(AUDIT_FORMATS),
    default="table",
    show_default=True,
    help="table for people; json (see rotation/schemas/audit.schema.json), csv, markdown, "
    "html (one self-contained page with a chart) for machines and reviewers",
)
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), help="write here")
@click.option(
    "--fail-on",
    type=click.Choice(["due", "overdue"]),
    help="exit 1 when any key is at or past this status (for CI gates)",
)
@click.option(
    "--all-rows",
    is_flag=True,
    help="on a terminal, every row (by default the 50 most urgent and a summary)",
)
@click.option("--access", is_flag=True, help="report the access log: who read which key, when")
@click.option("--since", help="with --access: only events this recent, e.g. 30d")
@click.option("--key", "key_filter", help="with --access: only this key")
@click.option(
    "--verify",
    is_flag=True,
    help="with --access: check the log's chain; exit 6 naming the first bad row",
)
@click.pass_obj
@handles_errors
def audit(
    state: State,
    provider: str | None,
    output_format: str,
    output: Path | None,
    fail_on: str | None,
    all_rows: bool,
    access: bool,
    since: str | None,
    key_filter: str | None,
    verify: bool,
) -> None:
    """One row per key: age, policy, status, secondary and its retire time. Never a value.

    With --access: the access log (every read of a value through keyvault) instead.
    """
    if access or verify or since or key_filter:
        if not access:
            raise ConfigError("--since, --key and --verify go with --access")
        _audit_access(state, provider, output_format, since, key_filter, verify)
        return
    kv = state.kv
    now = utcnow()
    rows = _audit_with_progress(kv, now, provider)
    console = render.console()
    if output_format == "table" and output is None and not console.is_terminal:
        report.write_plain_table(rows, sys.stdout)  # piped: every row, as plain text
    elif output_format == "table" and output is None:
        shown = rows if all_rows else rows[:TERMINAL_ROWS]
        console.print(report.to_table(shown))
        if len(shown) < len(rows):
            worst_first = sorted(
                report.summary(rows).items(), key=lambda c: -SEVERITY[Status(c[0])]
            )
            counts = ", ".join(f"{n} {status}" for status, n in worst_first if n)
            click.echo(
                f"{len(rows)} keys ({counts}); the {len(shown)} most urgent are shown: "
                "--all-rows for every one, or --format csv/json/html",
                err=True,
            )
    else:
        writers: dict[str, Callable[[TextIO], None]] = {
            "json": lambda out: report.write_json(rows, now, out),
            "csv": lambda out: report.write_csv(rows, out),
            "markdown": lambda out: report.write_markdown(rows, out),
            "html": lambda out: report.write_html(rows, now, out),
            "table": lambda out: report.write_plain_table(rows, out),
        }
        if output is not None:
            with output.open("w", encoding="utf-8") as handle:
                writers[output_format](handle)
            click.echo(f"wrote {output} ({len(rows)} keys)", err=True)
        else:
            writers[output_format](sys.stdout)
    errors = [row for row in rows if row.status == Status.ERROR]
    for row in errors:
        click.echo(f"error: {_row_label(row)}: {row.note}", err=True)
    if errors:
        sys.exit(max(row.error_code or 1 for row in errors))
    if fail_on is not None:
        threshold = SEVERITY[Status(fail_on)]
        failing = [r for r in rows if r.status != Status.ERROR and r.severity >= threshold]
        if failing:
            click.echo(
                f"audit: {len(failing)} key(s) {fail_on} or worse: "
                + ", ".join(r.name for r in failing[:10]),
                err=True,
            )
            sys.exit(1)


def _access_logs(state: State, provider: str | None) -> list[tuple[str, AccessLog]]:
    """Every access log in reach: each file store's own, and the configured local file."""
    from keyvault.providers.file import FileProvider

    kv = state.kv
    logs: list[tuple[str, AccessLog]] = []
    for name in [provider] if provider else kv.provider_names():
        backend = kv.provider(name)
        shared = backend.access_log
        if isinstance(backend, FileProvider):
            logs.append((f"store of provider {name}", backend.own_access_log()))
        elif shared is not None and all(log is not shared for _, log in logs):
            logs.append((f"access log {shared.path}", shared))
    return logs


def _audit_access(
    state: State,
    provider: str | None,
    output_format: str,
    since: str | None,
    key_filter: str | None,
    verify: bool,
) -> None:
    logs = _access_logs(state, provider)
    if verify:
        broken = []
        for label, log in logs:
            found = log.verify()
            if found is not None:
                broken.append(f"{label}: row {found.seq}: {found.reason}")
        for line in broken:
            click.echo(f"error: access log broken: {line}", err=True)
        if broken:
            sys.exit(IntegrityError.exit_code)
        click.echo(f"access log: {len(logs)} chain(s) verified")
        return
    cutoff = None
    if since is not None:
        try:
            cutoff = utcnow() - parse_duration(since)
        except ValueError as exc:
            raise ConfigError(f"--since: {exc}") from None
    events = [
        event
        for _, log in logs
        for event in (log.access_events() if hasattr(log, "access_events") else log.events())
        if (cutoff is None or event.at >= cutoff)
        and (key_filter is None or event.key == key_filter)
    ]
    events.sort(key=lambda event: event.at, reverse=True)
    if output_format == "json":
        click.echo(render.dumps([render.access_json(e) for e in events]))
    elif output_format == "csv":
        click.echo(render.access_csv(events), nl=False)
    else:
        render.console().print(render.access_table(events))


def _row_label(row: AuditRow) -> str:
    """An error row names its provider, or its key when only that key is affected."""
    return f"provider {row.provider}" if row.name == "*" else f"key {row.name} ({row.provider})"


@contextmanager
def _progress_bar(what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar with rate and ETA on a terminal (stderr); nothing when piped."""
    err = render.console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    with render.progress(err, what) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int) -> None:  # the sweep calls it one key at a time
            bar.update(task, total=total, completed=done)

        yield advance


def _audit_with_progress(kv: KeyVault, now: datetime, provider: str | None) -> list[AuditRow]:
    """A progress bar on a terminal (stderr), none when piped."""
    err = render.console(stderr=True)
    if not err.is_terminal:
        return run_audit(kv, now, provider=provider)
    with render.progress(err, "reading providers", unit="providers") as bar:
        task = bar.add_task("reading providers", total=None)

        def advance(name: str, done: int, total: int) -> None:
            bar.update(task, total=total, completed=done, description=f"read {name}")

        return run_audit(kv, now, provider=provider, progress=advance)


def main() -> None:
    cli(prog_name="keyvault")
