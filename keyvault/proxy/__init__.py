"""``keyvault proxy``: a local reverse proxy that adds the current key to every request, for
apps in any language (the ``proxy`` extra). See :mod:`.app` and :mod:`.server`."""

from keyvault.proxy.app import ProxyApp, Route

__all__ = ["ProxyApp", "Route"]
