"""Random tokens for keys this organisation issues itself (service-to-service keys)."""

from __future__ import annotations

from keyvault.secret import SecretValue
from rotation.config import GeneratedIssuerConfig
from rotation.issuers import Issued
from rotation.tokens import URLSAFE_ALPHABET, generate_token


class GeneratedIssuer:
    can_create = True

    def __init__(self, config: GeneratedIssuerConfig | None = None) -> None:
        self.config = config or GeneratedIssuerConfig()

    def create(self, key_name: str) -> Issued:
        token = generate_token(
            self.config.length,
            alphabet=self.config.alphabet or URLSAFE_ALPHABET,
            prefix=self.config.prefix,
        )
        return Issued(SecretValue(token))

    def verify(self, key_name: str, value: SecretValue) -> None:
        """Nothing upstream to ask; a key's ``probe`` can check the service that uses it."""

    def revoke(self, key_name: str, value: SecretValue, ref: str | None) -> None:
        """Dropping the stage is the revocation: services validate against keyvault."""
