# An application: read its keys' values. No listing, no writing, no metadata.
path "secret/data/keyvault/*" {
  capabilities = ["read"]
}
