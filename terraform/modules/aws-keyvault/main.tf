data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
  # every secret this deployment manages, by ARN pattern (the suffix AWS adds is random)
  secret_arn_pattern  = "arn:${local.partition}:secretsmanager:${local.region}:${local.account_id}:secret:${var.secret_prefix}*"
  via_secrets_manager = "secretsmanager.${local.region}.amazonaws.com"
}

resource "aws_kms_key" "keyvault" {
  description             = "keyvault ${var.name}: encrypts the managed Secrets Manager secrets"
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms_key.json
  tags                    = merge(var.tags, { "keyvault:managed" = "true" })
}

# The key policy delegates to IAM, so the three IAM policies below decide who may use it.
data "aws_iam_policy_document" "kms_key" {
  # checkov:skip=CKV_AWS_111: a key policy's "*" is this key alone; the account root entry delegates to IAM (AWS's default key policy)
  # checkov:skip=CKV_AWS_356: in a key policy, Resource "*" means the key the policy is attached to
  # checkov:skip=CKV_AWS_109: permissions management stays with the account's IAM admins, as in AWS's default key policy
  statement {
    sid       = "AccountAdministersThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_alias" "keyvault" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.keyvault.key_id
}

resource "aws_secretsmanager_secret" "key" {
  for_each                = var.keys
  name                    = "${var.secret_prefix}${each.key}"
  description             = each.value.description != "" ? each.value.description : "keyvault key ${each.key}"
  kms_key_id              = aws_kms_key.keyvault.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags = merge(var.tags, {
    "keyvault:managed"     = "true"
    "keyvault:environment" = each.value.environment
  })
  # checkov:skip=CKV2_AWS_57: rotation is keyvault's job (`keyvault serve`), not a Lambda's
}
