"""``keyvault run`` as a Dockerfile CMD would use it: real child processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from keyvault.secret import fingerprint
from rotation.cli import cli
from tests.leaks import assert_not_leaked, canary

KEYVAULT = str(Path(sys.executable).with_name("keyvault"))
#: a child that records the fingerprint of $API_KEY each time it starts, then waits
CHILD = (
    "import os, sys, time\n"
    "sys.path.insert(0, {root!r})\n"
    "from keyvault.secret import fingerprint\n"
    "with open('seen.txt', 'a') as f: f.write(fingerprint(os.environ['API_KEY']) + '\\n')\n"
    "time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 60)\n"
)


def put(*args: str, value: str) -> None:
    assert CliRunner().invoke(cli, ["put", *args], input=value).exit_code == 0


def child_script(workdir: Path) -> str:
    script = workdir / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).resolve().parents[1])))
    return str(script)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def seen(workdir: Path) -> list[str]:
    path = workdir / "seen.txt"
    return path.read_text().split() if path.exists() else []


def test_the_child_gets_the_key_in_its_environment_and_nowhere_else(workdir: Path) -> None:
    raw = canary()
    put("svc/key", value=raw)
    proc = subprocess.Popen(
        [
            KEYVAULT,
            "run",
            "--env",
            "API_KEY=svc/key",
            "--",
            sys.executable,
            child_script(workdir),
            "2",
        ],
        cwd=workdir,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: seen(workdir))
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert seen(workdir) == [fingerprint(raw)]
    assert_not_leaked(listing + out + err, raw, where="ps output and run's own output")
    assert "API_KEY=svc/key" in err and fingerprint(raw) in err  # names and fingerprints only


def test_exit_codes_and_signals_pass_through(workdir: Path) -> None:
    put("svc/key", value=canary())
    base = [KEYVAULT, "run", "--env", "API_KEY=svc/key", "--"]
    code = subprocess.run(
        [*base, sys.executable, "-c", "raise SystemExit(7)"], cwd=workdir, env=env()
    )
    assert code.returncode == 7
    killed = subprocess.run([*base, "sh", "-c", "kill -TERM $$"], cwd=workdir, env=env())
    assert killed.returncode == 128 + signal.SIGTERM
    proc = subprocess.Popen([*base, sys.executable, child_script(workdir)], cwd=workdir, env=env())
    wait_for(lambda: seen(workdir))
    proc.send_signal(signal.SIGTERM)  # forwarded: the child ends, run reports how
    assert proc.wait(30) == 128 + signal.SIGTERM


def test_the_guard_and_a_missing_key_stop_before_anything_starts(workdir: Path) -> None:
    put("svc/prod", "--environment", "prod", value=canary())
    command = [sys.executable, child_script(workdir)]
    guarded = subprocess.run(
        [KEYVAULT, "run", "--env", "API_KEY=svc/prod", "--", *command],
        cwd=workdir,
        env={**env(), "KEYVAULT_ENV": "dev"},
        capture_output=True,
        text=True,
    )
    assert guarded.returncode == 4, guarded.stderr
    missing = subprocess.run(
        [KEYVAULT, "run", "--env", "API_KEY=svc/none", "--", *command],
        cwd=workdir,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 3, missing.stderr
    assert seen(workdir) == []


def test_watch_restarts_the_child_on_the_new_primary(workdir: Path) -> None:
    first = canary("first")
    put("svc/key", value=first)
    proc = subprocess.Popen(
        [
            KEYVAULT,
            "run",
            "--watch",
            "--interval",
            "1s",
            "--restart-grace",
            "5s",
            "--env",
            "API_KEY=svc/key",
            "--",
            sys.executable,
            child_script(workdir),
        ],
        cwd=workdir,
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: seen(workdir) == [fingerprint(first)])
        rotated = CliRunner().invoke(cli, ["rotate", "svc/key", "--force"])
        assert rotated.exit_code == 0, rotated.output
        wait_for(lambda: len(seen(workdir)) == 2)
        assert seen(workdir)[1] != fingerprint(first)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "a key rotated" in err
    assert_not_leaked(err, first, where="run's log")


def test_the_child_does_not_inherit_keyvaults_own_credentials(workdir: Path) -> None:
    """The store's master key (here from a variable) and a Vault token stay with keyvault."""
    from keyvault.crypto import MasterKey

    master = MasterKey.generate().to_base64()
    config = (
        (workdir / "keyvault.toml")
        .read_text()
        .replace('master_key_file = "master.key"', 'master_key_env = "KV_RUN_MASTER"')
    )
    (workdir / "keyvault.toml").write_text(config.replace('"store.db"', '"env.db"'))
    environment = {**env(), "KV_RUN_MASTER": master, "VAULT_TOKEN": canary("token")}
    assert (
        CliRunner(env={"KV_RUN_MASTER": master})
        .invoke(cli, ["--config", "keyvault.toml", "init"])
        .exit_code
        == 0
    )
    assert (
        CliRunner(env={"KV_RUN_MASTER": master})
        .invoke(cli, ["put", "svc/key"], input=canary())
        .exit_code
        == 0
    )
    shown = subprocess.run(
        [KEYVAULT, "run", "--env", "API_KEY=svc/key", "--", sys.executable, "-c",
         "import os; print(sorted(k for k in os.environ if k in ('KV_RUN_MASTER', 'API_KEY')))"],
        cwd=workdir, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "['API_KEY']"
