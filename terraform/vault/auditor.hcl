# An auditor: list keys and read their metadata (stage pointers, fingerprints, times) and
# Transit keys' rotation state. Never secret data.
path "secret/metadata/keyvault/*" {
  capabilities = ["read", "list"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}
