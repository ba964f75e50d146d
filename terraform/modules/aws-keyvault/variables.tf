variable "name" {
  description = "Short name for this keyvault deployment; prefixes the KMS alias and the IAM policies."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "secret_prefix" {
  description = "Prefix of every Secrets Manager secret name; must match the keyvault aws provider's `prefix`."
  type        = string
  default     = "keyvault/"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/-]*/$", var.secret_prefix))
    error_message = "secret_prefix must be lower-case letters, digits and . _ / -, ending with '/'."
  }
}

variable "keys" {
  description = "The keys to provision: key name (as keyvault names it) => its environment and an optional description. Values are put by `keyvault put`, never by Terraform."
  type = map(object({
    environment = string
    description = optional(string, "")
  }))
  validation {
    condition = alltrue([
      for name in keys(var.keys) :
      can(regex("^[a-z0-9][a-z0-9._/-]*$", name)) && length(name) <= 128 && !endswith(name, "/") && !strcontains(name, "//")
    ])
    error_message = "Key names are [a-z0-9][a-z0-9._/-]*, at most 128 characters, with no empty path segment."
  }
  validation {
    condition     = alltrue([for key in values(var.keys) : contains(["dev", "test", "ci", "staging", "prod"], key.environment)])
    error_message = "Each key's environment must be one of dev, test, ci, staging, prod."
  }
}

variable "rotation_period_in_days" {
  description = "How often AWS rotates the KMS key's material by itself."
  type        = number
  default     = 90
  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560 && floor(var.rotation_period_in_days) == var.rotation_period_in_days
    error_message = "rotation_period_in_days must be a whole number from 90 to 2560 (the range KMS accepts)."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before a deleted KMS key is gone."
  type        = number
  default     = 30
  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "kms_deletion_window_in_days must be from 7 to 30."
  }
}

variable "secret_recovery_window_in_days" {
  description = "Recovery window of a deleted secret: 0 deletes at once, else 7 to 30."
  type        = number
  default     = 7
  validation {
    condition     = var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30)
    error_message = "secret_recovery_window_in_days must be 0 or from 7 to 30."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
