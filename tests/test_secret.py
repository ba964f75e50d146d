"""A secret value never shows itself by accident."""

from __future__ import annotations

import copy
import io
import logging
import pickle

import pytest

from keyvault.model import KeySet, KeyVersion
from keyvault.secret import SecretValue, fingerprint
from tests.leaks import assert_not_leaked, canary


def test_repr_str_format_show_only_the_fingerprint() -> None:
    raw = canary()
    secret = SecretValue(raw)
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>80}",
        "%s" % (secret,),  # noqa: UP031 - the logging style of formatting
    ):
        assert_not_leaked(text, raw, where="a string conversion")
        assert secret.fingerprint in text


def test_containers_and_dataclasses_stay_redacted() -> None:
    raw = canary()
    keyset = KeySet("a/b", KeyVersion("1", SecretValue(raw), None))
    assert_not_leaked(repr(keyset), raw, where="KeySet repr")
    assert_not_leaked(str([keyset, {"k": SecretValue(raw)}]), raw, where="container str")


def test_logging_redacts() -> None:
    raw = canary()
    stream = io.StringIO()
    logger = logging.getLogger("test.secret")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("key is %s (%r)", SecretValue(raw), SecretValue(raw))
        logger.warning("key object %s", {"v": SecretValue(raw)})
    finally:
        logger.removeHandler(handler)
    assert_not_leaked(stream.getvalue(), raw, where="a log line")
    assert "fp:" in stream.getvalue()


def test_pickling_is_refused() -> None:
    secret = SecretValue(canary())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(KeyVersion("1", secret, None))


def test_copy_keeps_the_same_object() -> None:
    secret = SecretValue(canary())
    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret


def test_reveal_is_the_only_way_out() -> None:
    raw = canary()
    assert SecretValue(raw).reveal() == raw


def test_equality_and_fingerprint_are_stable() -> None:
    raw = canary()
    assert SecretValue(raw) == SecretValue(raw)
    assert SecretValue(raw) != SecretValue(raw + "x")
    assert SecretValue(raw).fingerprint == fingerprint(raw)
    # known answers, as literals: the fingerprint is stable across releases and backends
    assert fingerprint("example") == "fp:7ce081d82d904feb"
    assert fingerprint("sk-test-known-answer") == "fp:9f8f0ea68e15c071"
    assert fingerprint("é") == "fp:45b455ff2046652d"  # UTF-8, not Latin-1


def test_empty_and_non_text_values_are_refused() -> None:
    with pytest.raises(ValueError):
        SecretValue("")
    with pytest.raises(TypeError):
        SecretValue(b"bytes")  # type: ignore[arg-type]
