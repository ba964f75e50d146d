output "kms_key_arn" {
  description = "Put this in keyvault.toml as the aws provider's kms_key_id."
  value       = module.keyvault.kms_key_arn
}

output "secret_arns" {
  description = "Key name => secret ARN."
  value       = module.keyvault.secret_arns
}

output "policy_arns" {
  description = "Attach these to the rotator, app and auditor roles."
  value       = module.keyvault.policy_arns
}

output "policy_documents" {
  description = "The rendered IAM policy documents."
  value       = module.keyvault.policy_documents
}
