# Three roles, each as narrow as its job allows.

# rotator: read, stage, move labels, describe and list the managed secrets; use the KMS key
data "aws_iam_policy_document" "rotator" {
  statement {
    sid = "RotateManagedSecrets"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:UpdateSecretVersionStage",
      "secretsmanager:DescribeSecret",
      "secretsmanager:ListSecretVersionIds",
      "secretsmanager:TagResource",
      "secretsmanager:UntagResource",
    ]
    resources = [local.secret_arn_pattern]
  }
  statement {
    sid       = "ListSecrets"
    actions   = ["secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue"]
    resources = ["*"] # neither action supports resource-level permissions
  }
  statement {
    sid       = "UseTheKeyThroughSecretsManager"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.keyvault.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.via_secrets_manager]
    }
  }
  statement {
    sid       = "AuditAndRotateTheKmsKey"
    actions   = ["kms:DescribeKey", "kms:GetKeyRotationStatus", "kms:ListKeyRotations", "kms:RotateKeyOnDemand"]
    resources = [aws_kms_key.keyvault.arn]
  }
}

# app: read the named secrets' values, decrypt only through Secrets Manager; nothing else
data "aws_iam_policy_document" "app" {
  statement {
    sid       = "ReadTheNamedSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for secret in aws_secretsmanager_secret.key : secret.arn]
  }
  statement {
    sid       = "DecryptThroughSecretsManagerOnly"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.keyvault.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.via_secrets_manager]
    }
  }
}

# auditor: list and describe secrets and the KMS key's rotation; never a secret value
data "aws_iam_policy_document" "auditor" {
  statement {
    sid       = "ListSecrets"
    actions   = ["secretsmanager:ListSecrets"]
    resources = ["*"] # ListSecrets has no resource-level permissions
  }
  statement {
    sid       = "DescribeManagedSecrets"
    actions   = ["secretsmanager:DescribeSecret", "secretsmanager:ListSecretVersionIds"]
    resources = [local.secret_arn_pattern]
  }
  statement {
    sid       = "KmsRotationStatus"
    actions   = ["kms:DescribeKey", "kms:GetKeyRotationStatus", "kms:ListKeyRotations"]
    resources = [aws_kms_key.keyvault.arn]
  }
}

resource "aws_iam_policy" "rotator" {
  name        = "${var.name}-rotator"
  description = "keyvault ${var.name}: the rotation service"
  policy      = data.aws_iam_policy_document.rotator.json
  tags        = var.tags
}

resource "aws_iam_policy" "app" {
  name        = "${var.name}-app"
  description = "keyvault ${var.name}: applications reading their keys"
  policy      = data.aws_iam_policy_document.app.json
  tags        = var.tags
}

resource "aws_iam_policy" "auditor" {
  name        = "${var.name}-auditor"
  description = "keyvault ${var.name}: audits of key age and rotation"
  policy      = data.aws_iam_policy_document.auditor.json
  tags        = var.tags
}
