"""The HTTP requests issuers and probes make, with errors that never quote a response body
(an issuing API's body can hold the key it just made)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from keyvault.secret import SecretValue
from rotation.config import RequestConfig
from rotation.errors import IssuerError


def fill(template: Any, values: Mapping[str, str]) -> Any:
    """Replace ``{name}``-style fields in strings, recursively through JSON bodies."""
    if isinstance(template, str):
        for field, value in values.items():
            template = template.replace("{" + field + "}", value)
        return template
    if isinstance(template, dict):
        return {key: fill(item, values) for key, item in template.items()}
    if isinstance(template, list):
        return [fill(item, values) for item in template]
    return template


def url_values(values: Mapping[str, str]) -> dict[str, str]:
    """Values percent-encoded for a URL: an issuer's id (``{id}``) cannot add a path
    segment or a query (``../admin``, ``x?all=1``); a key name keeps its slashes, which are
    canonical segments (see ``validate_name``)."""
    return {
        field: quote(value, safe="/" if field == "name" else "") for field, value in values.items()
    }


def header_value(header: str, key: SecretValue) -> str:
    raw = key.reveal()
    return f"Bearer {raw}" if header.lower() == "authorization" else raw


def send(
    client: httpx.Client,
    spec: RequestConfig,
    *,
    purpose: str,
    values: Mapping[str, str],
    headers: Mapping[str, str],
) -> httpx.Response:
    url = fill(spec.url, url_values(values))
    try:
        return client.request(
            spec.method,
            url,
            headers={**fill(dict(spec.headers), values), **headers},
            json=fill(spec.json_body, values) if spec.json_body is not None else None,
        )
    except httpx.HTTPError as exc:
        raise IssuerError(
            f"{purpose} request {spec.method} {url} failed: {type(exc).__name__}"
        ) from None


def json_path(document: Any, path: str) -> Any:
    """``data.secret`` → document["data"]["secret"]; list indexes as numbers."""
    current = document
    for part in path.split("."):
        if isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(path)
    return current
