"""The AWS backend: Secrets Manager credential keys (:mod:`.secrets`), the tags that carry
what ListSecrets does not (:mod:`.tags`), KMS keys as server-rotated keys (:mod:`.kms`) and
the one error boundary (:mod:`.errors`). The file store's KMS-wrapped master key lives with
the other master-key sources, in :mod:`keyvault.masterkey_kms`."""

from keyvault.providers.aws.errors import BOTO_CONFIG, map_boto_error
from keyvault.providers.aws.kms import KmsKeys, kms_key_info
from keyvault.providers.aws.secrets import AwsProvider

__all__ = ["BOTO_CONFIG", "AwsProvider", "KmsKeys", "kms_key_info", "map_boto_error"]
