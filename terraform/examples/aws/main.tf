terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.50"
    }
  }
}

provider "aws" {
  region = var.region

  # Point every service at a local AWS emulator (moto, LocalStack) when `endpoint` is set;
  # leave it empty for real AWS, with credentials from the usual chain.
  access_key                  = var.endpoint != "" ? "test" : null
  secret_key                  = var.endpoint != "" ? "test" : null
  skip_credentials_validation = var.endpoint != ""
  skip_requesting_account_id  = var.endpoint != ""
  skip_metadata_api_check     = var.endpoint != ""

  endpoints {
    iam            = var.endpoint != "" ? var.endpoint : null
    kms            = var.endpoint != "" ? var.endpoint : null
    secretsmanager = var.endpoint != "" ? var.endpoint : null
    sts            = var.endpoint != "" ? var.endpoint : null
  }

  # keyvault records each version's fingerprint, creation time and issuer id in tags as it
  # rotates; they are its state, not drift
  ignore_tags {
    key_prefixes = ["keyvault:current-", "keyvault:previous-", "keyvault:pending-", "keyvault:promoted-", "keyvault:promoting", "keyvault:rolled-back", "keyvault:staging", "keyvault:ref:"]
  }
}

module "keyvault" {
  source = "../../modules/aws-keyvault"

  name                           = var.name
  keys                           = var.keys
  rotation_period_in_days        = var.rotation_period_in_days
  secret_recovery_window_in_days = var.secret_recovery_window_in_days
}
