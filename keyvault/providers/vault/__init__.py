"""The Vault / OpenBao backend: KV v2 credential keys (:mod:`.kv`), their stage documents
and metadata index (:mod:`.documents`), authentication (:mod:`.auth`) and Transit keys as
server-rotated keys (:mod:`.transit`)."""

from keyvault.providers.vault.auth import AppRoleLogin
from keyvault.providers.vault.kv import VaultProvider
from keyvault.providers.vault.transit import TransitKeys

__all__ = ["AppRoleLogin", "TransitKeys", "VaultProvider"]
