"""``keyvault run``: start a command with keys in its environment, and keep them current.

For apps in any language: the values exist only in the child's environment (never on a
command line, in output or in a log line, which carry names and fingerprints), they come
through the same per-key cache and environment guard as the thin client, and with
``--watch`` the child is restarted on the new primary after a rotation. Signals are
forwarded and the child's exit status is passed on, so ``run`` sits in a Dockerfile ``CMD``
or a systemd unit unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from keyvault.access import reading
from keyvault.errors import ConfigError, KeyvaultError
from keyvault.model import KeySet, validate_name
from keyvault.registry import KeyVault

log = logging.getLogger("keyvault.run")

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Binding:
    """One ``--env VAR=KEY``: which variable gets which key's primary."""

    variable: str
    key: str

    @classmethod
    def parse(cls, text: str) -> Binding:
        variable, sep, key = text.partition("=")
        if not sep or not _VARIABLE.fullmatch(variable):
            raise ConfigError(
                f"--env {text!r}: write VAR=KEY, e.g. --env ANTHROPIC_API_KEY=anthropic/prod "
                "(VAR: letters, digits and _, not starting with a digit)"
            )
        return cls(variable, validate_name(key))


def parse_bindings(texts: Sequence[str]) -> list[Binding]:
    bindings = [Binding.parse(text) for text in texts]
    if not bindings:
        raise ConfigError("name at least one key: --env VAR=KEY")
    seen: set[str] = set()
    for binding in bindings:
        if binding.variable in seen:
            raise ConfigError(f"--env {binding.variable} is given twice")
        seen.add(binding.variable)
    return bindings


def exit_status(returncode: int) -> int:
    """A shell's convention: the child's code, or 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


class Runner:
    """Runs and supervises one child process."""

    def __init__(
        self,
        kv: KeyVault,
        bindings: Sequence[Binding],
        command: Sequence[str],
        *,
        restart_signal: signal.Signals = signal.SIGTERM,
        restart_grace: float = 10.0,
        environ: Mapping[str, str] | None = None,
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> None:
        if not command:
            raise ConfigError("no command to run: keyvault run --env VAR=KEY -- COMMAND ...")
        self.kv = kv
        self.bindings = list(bindings)
        self.command = list(command)
        self.restart_signal = restart_signal
        self.restart_grace = restart_grace
        inherited = os.environ if environ is None else environ
        # the child gets its keys, not keyvault's own credentials (the store's master key,
        # the Vault token): with those it could read every key
        hidden = kv.config.credential_variables()
        self._environ = {k: v for k, v in inherited.items() if k not in hidden}
        self._popen = popen
        self._stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    # -- keys ------------------------------------------------------------------------------

    def keysets(self) -> dict[str, KeySet]:
        """Each bound key through its process-wide cache: guarded, and fetched past the
        cache only when the cache's TTL says so."""
        with reading("run"):
            return {b.key: self.kv.cache(b.key).get() for b in self.bindings}

    def _environment(self, keysets: Mapping[str, KeySet]) -> dict[str, str]:
        values = {b.variable: keysets[b.key].primary.secret.reveal() for b in self.bindings}
        return {**self._environ, **values}

    @staticmethod
    def fingerprints(keysets: Mapping[str, KeySet]) -> dict[str, str]:
        return {name: keyset.primary.fingerprint for name, keyset in keysets.items()}

    # -- the child -------------------------------------------------------------------------

    def _start(self, keysets: Mapping[str, KeySet]) -> None:
        try:
            self.child = self._popen(self.command, env=self._environment(keysets))
        except OSError as exc:
            raise ConfigError(f"cannot start {self.command[0]!r}: {exc.strerror}") from None
        log.info(
            "started %s (pid %d) with %s",
            self.command[0],
            self.child.pid,
            ", ".join(
                f"{b.variable}={b.key} ({keysets[b.key].primary.fingerprint})"
                for b in self.bindings
            ),
        )

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGINT, signal.SIGTERM):
            self._stop.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _restart(self, keysets: Mapping[str, KeySet]) -> None:
        """Stop the child (restart signal, then SIGKILL after the grace) and start it again
        with the new values."""
        assert self.child is not None
        self.child.send_signal(self.restart_signal)
        try:
            self.child.wait(self.restart_grace)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s did not stop within %.0fs; killing it", self.command[0], self.restart_grace
            )
            self.child.kill()
            self.child.wait()
        self.restarts += 1
        self._start(keysets)

    def run(self, *, watch_interval: float | None = None) -> int:
        """Start the child, supervise it, and return the exit status ``run`` should exit
        with. With ``watch_interval``, the keys are checked that often and the child is
        restarted when a primary changes."""
        keysets = self.keysets()  # guard or missing key: raises before anything starts
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            self._start(keysets)
            assert self.child is not None
            while True:
                try:
                    return exit_status(self.child.wait(timeout=watch_interval))
                except subprocess.TimeoutExpired:
                    pass
                if self._stop.is_set():
                    continue  # forwarded; wait for the child to finish
                fresh = self._fresh_keysets(keysets)
                if self.fingerprints(fresh) != self.fingerprints(keysets):
                    log.info(
                        "a key rotated (%s); restarting %s",
                        ", ".join(
                            f"{name} -> {fp}" for name, fp in self.fingerprints(fresh).items()
                        ),
                        self.command[0],
                    )
                    keysets = fresh
                    self._restart(keysets)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _fresh_keysets(self, current: Mapping[str, KeySet]) -> dict[str, KeySet]:
        """Each key read past its cache (the watch interval is the caller's to choose); a
        backend that fails leaves the child as it is."""
        try:
            with reading("run"):
                return {b.key: self.kv.cache(b.key).refresh() for b in self.bindings}
        except KeyvaultError as exc:
            log.warning("could not check the keys (%s); keeping the child as it is", exc)
            return dict(current)
