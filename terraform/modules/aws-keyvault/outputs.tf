output "kms_key_arn" {
  description = "The KMS key the secrets are encrypted under (`kms_key_id` in keyvault's aws provider)."
  value       = aws_kms_key.keyvault.arn
}

output "kms_alias" {
  description = "The KMS key's alias."
  value       = aws_kms_alias.keyvault.name
}

output "secret_arns" {
  description = "Key name => Secrets Manager secret ARN."
  value       = { for name, secret in aws_secretsmanager_secret.key : name => secret.arn }
}

output "policy_arns" {
  description = "IAM policy ARNs for the rotator, app and auditor roles."
  value = {
    rotator = aws_iam_policy.rotator.arn
    app     = aws_iam_policy.app.arn
    auditor = aws_iam_policy.auditor.arn
  }
}

output "policy_documents" {
  description = "The IAM policy documents (JSON), for review and for tests."
  value = {
    rotator = data.aws_iam_policy_document.rotator.json
    app     = data.aws_iam_policy_document.app.json
    auditor = data.aws_iam_policy_document.auditor.json
  }
}
