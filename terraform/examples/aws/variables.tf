variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "endpoint" {
  description = "A local AWS emulator's URL (e.g. a moto server); empty for real AWS."
  type        = string
  default     = ""
}

variable "name" {
  description = "Deployment name (KMS alias, IAM policy names)."
  type        = string
  default     = "keyvault"
}

variable "keys" {
  description = "Keys to provision: name => { environment, description }."
  type = map(object({
    environment = string
    description = optional(string, "")
  }))
  default = {
    "anthropic/prod" = { environment = "prod", description = "Claude API key for production" }
    "payments/api"   = { environment = "prod" }
    "payments/dev"   = { environment = "dev" }
  }
}

variable "rotation_period_in_days" {
  description = "KMS automatic rotation period."
  type        = number
  default     = 90
}

variable "secret_recovery_window_in_days" {
  description = "0 deletes secrets at once (test environments); 7-30 otherwise."
  type        = number
  default     = 7
}
