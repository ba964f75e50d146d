"""Terraform: formatted and valid, applied for real against a moto server, used by keyvault,
its policy documents checked, then destroyed; the Vault policies proven on OpenBao; checkov.

Skips (with the reason) only where terraform, its AWS provider mirror or checkov is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from click.testing import CliRunner

from keyvault.errors import AuthError
from keyvault.providers.vault import VaultProvider
from keyvault.secret import SecretValue
from rotation.cli import cli
from tests.leaks import assert_not_leaked, canary
from tests.servers import BaoServer

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = shutil.which("terraform")
MIRROR_ENV = "KEYVAULT_TF_PLUGIN_DIR"


def provider_mirror() -> Path | None:
    """The folder holding registry.terraform.io/hashicorp/aws (for -plugin-dir)."""
    candidates = [
        os.environ.get(MIRROR_ENV, ""),
        "/opt/tf-plugins",
        "/usr/share/terraform/plugins",
        str(Path.home() / ".terraform.d" / "plugins"),
    ]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return Path(candidate)
    return None


MIRROR = provider_mirror()
pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason="terraform is not installed"),
    pytest.mark.skipif(
        MIRROR is None,
        reason=f"no local mirror of the hashicorp/aws provider (set {MIRROR_ENV}); "
        "no registry is reachable here",
    ),
]


def tf(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": "/dev/null",
    }
    result = subprocess.run(
        [str(TERRAFORM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"terraform {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def tf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of terraform/, so .terraform and state never land in the repository."""
    work = tmp_path_factory.mktemp("tf") / "terraform"
    shutil.copytree(ROOT / "terraform", work)
    return work


def test_fmt_check() -> None:
    result = tf(ROOT / "terraform", "fmt", "-check", "-recursive", "-diff", check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("folder", ["modules/aws-keyvault", "examples/aws"])
def test_init_and_validate(tf_copy: Path, folder: str) -> None:
    tf(tf_copy / folder, "init", "-input=false", "-backend=false", f"-plugin-dir={MIRROR}")
    result = tf(tf_copy / folder, "validate", "-json")
    assert json.loads(result.stdout)["valid"] is True


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ('-var=keys={"Bad Name" = {environment = "prod"}}', "Key names are"),
        ('-var=keys={"a/b" = {environment = "production"}}', "environment must be one of"),
        ("-var=rotation_period_in_days=30", "from 90 to 2560"),
    ],
)
def test_inputs_are_validated(tf_copy: Path, variable: str, message: str) -> None:
    example = tf_copy / "examples/aws"
    tf(example, "init", "-input=false", "-backend=false", f"-plugin-dir={MIRROR}")
    result = tf(
        example, "plan", "-input=false", "-var=endpoint=http://127.0.0.1:9", variable, check=False
    )
    assert result.returncode != 0 and message in result.stderr


# -- applied for real against moto ------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(tf_copy: Path, moto_server: str) -> Iterator[dict[str, Any]]:
    example = tf_copy / "examples/aws"
    variables = [
        f"-var=endpoint={moto_server}",
        "-var=secret_recovery_window_in_days=0",
        f"-var=name=kv-{uuid.uuid4().hex[:6]}",
    ]
    tf(example, "init", "-input=false", f"-plugin-dir={MIRROR}")
    tf(example, "apply", "-auto-approve", "-input=false", *variables)
    outputs = {k: v["value"] for k, v in json.loads(tf(example, "output", "-json").stdout).items()}
    yield {"dir": example, "vars": variables, "outputs": outputs, "endpoint": moto_server}
    tf(example, "destroy", "-auto-approve", "-input=false", *variables)


def test_apply_creates_what_keyvault_needs(applied: dict[str, Any]) -> None:
    import boto3

    outputs = applied["outputs"]
    assert set(outputs["secret_arns"]) == {"anthropic/prod", "payments/api", "payments/dev"}
    kms = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=applied["endpoint"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    status = kms.get_key_rotation_status(KeyId=outputs["kms_key_arn"])
    assert status["KeyRotationEnabled"] is True
    sm = boto3.client(
        "secretsmanager",
        region_name="eu-west-1",
        endpoint_url=applied["endpoint"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    described = sm.describe_secret(SecretId=outputs["secret_arns"]["anthropic/prod"])
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    # Terraform's own tags; keyvault adds its state tags once it has rotated (another test)
    own = {k: v for k, v in tags.items() if k in ("keyvault:managed", "keyvault:environment")}
    assert own == {"keyvault:managed": "true", "keyvault:environment": "prod"}
    assert outputs["kms_key_arn"].endswith(described["KmsKeyId"].split("/")[-1])


def test_keyvault_fills_audits_and_rotates_the_terraform_secrets(
    applied: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    config = tmp_path / "keyvault.toml"
    config.write_text(
        f"""
[providers.aws]
type = "aws"
region = "eu-west-1"
endpoint_url = "{applied["endpoint"]}"
kms_key_id = "{applied["outputs"]["kms_key_arn"]}"
kms_keys = ["{applied["outputs"]["kms_key_arn"]}"]
"""
    )

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)

    empty = run("audit", "--format", "json")
    assert empty.exit_code == 0, empty.output
    assert [k["kind"] for k in json.loads(empty.stdout)["keys"]] == ["aws-kms"], (
        "empty shells are not keys yet"
    )
    values = {name: canary() for name in applied["outputs"]["secret_arns"]}
    for name, value in values.items():
        put = run("put", name, "--created-at", "2026-01-01T00:00:00Z", input=value)
        assert put.exit_code == 0, put.output
    audited = run("audit", "--format", "json")
    keys = {k["name"]: k for k in json.loads(audited.stdout)["keys"] if k["kind"] == "credential"}
    assert set(keys) == set(values)
    assert (
        keys["anthropic/prod"]["environment"] == "prod"
        and keys["payments/dev"]["environment"] == "dev"
    )
    assert {k["status"] for k in keys.values()} == {"overdue"}
    rotated = run("rotate", "--all", "--force", "--format", "json")
    assert rotated.exit_code == 0, rotated.output
    results = {o["key"]: o["result"] for o in json.loads(rotated.stdout)}
    assert results == dict.fromkeys(values, "rotated")
    after = run("audit", "--format", "json", "--fail-on", "overdue")
    assert after.exit_code == 0, after.output
    for text in (empty.output, audited.output, rotated.output, after.output):
        assert_not_leaked(text, *values.values(), where="keyvault output on Terraform's secrets")
    # keyvault's own tags are state, not drift: Terraform plans no change to the secrets.
    # (moto 5.2 does not report the KMS key's RotationPeriodInDays, so the key itself and the
    # policy documents derived from it show a spurious diff here; real AWS does not.)
    tf(applied["dir"], "plan", "-input=false", "-out=plan.bin", *applied["vars"])
    plan = json.loads(tf(applied["dir"], "show", "-json", "plan.bin").stdout)
    secret_changes = [
        change["address"]
        for change in plan.get("resource_changes", [])
        if change["type"] == "aws_secretsmanager_secret"
        and change["change"]["actions"] != ["no-op"]
    ]
    assert secret_changes == []


def _statements(document: str) -> list[dict[str, Any]]:
    return json.loads(document)["Statement"]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _all_actions(document: str) -> set[str]:
    return set().union(*(_actions(s) for s in _statements(document)))


def test_policy_documents_grant_each_role_only_its_job(applied: dict[str, Any]) -> None:
    docs = applied["outputs"]["policy_documents"]
    for name, document in docs.items():
        for statement in _statements(document):
            assert statement["Effect"] == "Allow", name
            assert not any(a.endswith(":*") or a == "*" for a in _actions(statement)), (
                f"{name}: wildcard action"
            )

    auditor = _all_actions(docs["auditor"])
    assert not any("GetSecretValue" in a or "BatchGet" in a for a in auditor), (
        "auditors never read values"
    )
    assert not any(
        a.split(":")[1].startswith(("Put", "Update", "Delete", "Create", "Tag", "Untag", "Rotate"))
        for a in auditor
    )
    assert {
        "secretsmanager:ListSecrets",
        "secretsmanager:DescribeSecret",
        "kms:GetKeyRotationStatus",
    } <= auditor

    app = _statements(docs["app"])
    assert _all_actions(docs["app"]) == {"secretsmanager:GetSecretValue", "kms:Decrypt"}
    read = next(s for s in app if "secretsmanager:GetSecretValue" in _actions(s))
    resources = read["Resource"] if isinstance(read["Resource"], list) else [read["Resource"]]
    assert sorted(resources) == sorted(applied["outputs"]["secret_arns"].values()), (
        "only the named secrets"
    )
    decrypt = next(s for s in app if "kms:Decrypt" in _actions(s))
    assert decrypt["Condition"]["StringEquals"]["kms:ViaService"].startswith("secretsmanager.")

    rotator = _all_actions(docs["rotator"])
    assert {
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:GetSecretValue",
        "secretsmanager:ListSecrets",
    } <= rotator
    assert not any(
        a.split(":")[1].startswith(("Delete", "Create", "PutResourcePolicy", "Schedule"))
        for a in rotator
    )
    assert not any(a.startswith("iam:") for a in rotator)
    for statement in _statements(docs["rotator"]):
        if any(a.startswith("kms:") and a != "kms:DescribeKey" for a in _actions(statement)):
            assert statement["Resource"] == applied["outputs"]["kms_key_arn"]


# -- Vault policies, proven on a real OpenBao ---------------------------------------------------


def _token(root: hvac.Client, policy_file: str) -> str:
    name = f"{Path(policy_file).stem}-{uuid.uuid4().hex[:6]}"
    root.sys.create_or_update_policy(
        name=name, policy=(ROOT / "terraform/vault" / policy_file).read_text()
    )
    return str(root.auth.token.create(policies=[name])["auth"]["client_token"])


def _as(server: BaoServer, token: str, **kwargs: Any) -> VaultProvider:
    return VaultProvider(
        "bao",
        hvac.Client(url=server.url),
        prefix="keyvault/",
        environ={"VAULT_TOKEN": token},
        **kwargs,
    )


def test_vault_policies_allow_and_deny(openbao: BaoServer, vault_root: hvac.Client) -> None:
    if "transit/" not in vault_root.sys.list_mounted_secrets_engines()["data"]:
        vault_root.sys.enable_secrets_engine("transit")
    transit_key = f"tk-{uuid.uuid4().hex[:6]}"
    vault_root.secrets.transit.create_key(transit_key)
    name = f"policy/{uuid.uuid4().hex[:8]}"
    rotator = _as(openbao, _token(vault_root, "rotator.hcl"), transit_keys=(transit_key,))
    app = _as(openbao, _token(vault_root, "app.hcl"))
    auditor = _as(openbao, _token(vault_root, "auditor.hcl"), transit_keys=(transit_key,))

    # the rotator runs the whole contract and rotates Transit keys, but cannot delete
    v1 = rotator.create(name, SecretValue(canary())).current.version
    staged = rotator.stage(name, SecretValue(canary()))
    assert staged.pending is not None
    rotator.promote(name, pending_version=staged.pending.version, expected_current=v1)
    assert name in {info.name for info in rotator.list_keys()}
    assert rotator.rotate_server_key(transit_key).latest_version == "2"
    with pytest.raises(AuthError):
        rotator.delete(name)
    outside = VaultProvider(
        "bao",
        hvac.Client(url=openbao.url),
        prefix="elsewhere/",
        environ={"VAULT_TOKEN": rotator.client.token},
    )
    with pytest.raises(AuthError):
        outside.create("x", SecretValue(canary()))

    # the app reads values, and nothing else
    assert app.get_keyset(name).secondary is not None
    with pytest.raises(AuthError):
        app.list_keys()
    with pytest.raises(AuthError):
        app.stage(name, SecretValue(canary()))

    # the auditor lists and reads metadata, and Transit state, never secret data
    assert name in {info.name for info in auditor.list_keys()}
    assert auditor.list_server_keys()[0].latest_version == "2"
    with pytest.raises(AuthError):
        auditor.get_keyset(name)
    with pytest.raises(AuthError):
        auditor.rotate_server_key(transit_key)


def _checkov() -> str | None:
    local = ROOT / ".venv-tools" / "bin" / "checkov"
    return str(local) if local.exists() else shutil.which("checkov")


@pytest.mark.skipif(
    _checkov() is None, reason="checkov is not installed (scripts/install-test-tools installs it)"
)
def test_checkov_passes_or_skips_are_justified() -> None:
    result = subprocess.run(
        [
            str(_checkov()),
            "-d",
            str(ROOT / "terraform"),
            "--quiet",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    assert failed == [], [f"{c['check_id']} {c['resource']}" for c in failed]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    for check in skipped:
        assert check.get("suppress_comment", "").strip(), (
            f"{check['check_id']} skipped without a reason"
        )
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 20
