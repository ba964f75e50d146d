# keyvault rotation service: read and write its keys (check-and-set), maintain their
# metadata index, list them; rotate Transit keys. No delete, nothing outside the prefix.
path "secret/data/keyvault/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/keyvault/*" {
  capabilities = ["read", "list", "update"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}

path "transit/keys/+/rotate" {
  capabilities = ["update"]
}

path "transit/keys/+/config" {
  capabilities = ["update"]
}
