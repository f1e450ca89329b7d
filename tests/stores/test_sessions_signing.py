"""Cookie signing: HMAC-SHA256, rotation, tamper detection, masked secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.stores import Secret, Signer

NEW = "n" * 32
OLD = "o" * 40


def test_round_trip_and_format() -> None:
    signer = Signer(NEW, salt="cookie")
    signed = signer.sign("abc")
    value, _, signature = signed.rpartition(".")
    assert value == "abc"
    key = hmac.new(NEW.encode(), b"bisman-ratelimit.signing:cookie", hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(hmac.new(key, b"abc", hashlib.sha256).digest()).rstrip(b"=").decode()
    assert signature == expected and len(signature) == 43
    assert signer.unsign(signed) == "abc"
    assert signer.unsign(signer.sign("with.dots.inside")) == "with.dots.inside"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: "abd" + s[3:],  # value changed
        lambda s: s[:-1] + ("x" if s[-1] != "x" else "y"),  # signature changed
        lambda s: s + "=",  # padding appended
        lambda s: s + "A",
        lambda s: s.rpartition(".")[0],  # signature removed
        lambda s: s.rpartition(".")[0] + ".",
        lambda s: "",
        lambda s: "." + s.rpartition(".")[2],
    ],
)
def test_tampering_is_detected(tamper: object) -> None:
    signer = Signer(NEW, salt="cookie")
    assert signer.unsign(tamper(signer.sign("abc"))) is None  # type: ignore[operator]


def test_salt_separates_uses() -> None:
    assert Signer(NEW, salt="other").unsign(Signer(NEW, salt="cookie").sign("abc")) is None


def test_key_rotation() -> None:
    old = Signer(OLD, salt="cookie")
    rotated = Signer([NEW, OLD], salt="cookie")
    assert rotated.unsign(old.sign("v")) == "v"
    assert rotated.sign("v") == Signer(NEW, salt="cookie").sign("v")
    assert Signer(NEW, salt="cookie").unsign(old.sign("v")) is None


def test_secrets_are_masked() -> None:
    secret = Secret(NEW)
    assert repr(secret) == str(secret) == "Secret('**********')"
    signer = Signer([secret, OLD], salt="cookie")
    assert NEW not in repr(signer) and OLD not in repr(signer)
    assert repr(signer) == "Signer(secrets=[Secret(**********), Secret(**********)], salt='cookie')"
    assert Signer(secret, salt="c").sign("v") == Signer(NEW, salt="c").sign("v")


def test_bad_secrets_and_values() -> None:
    with pytest.raises(InvalidArgument, match="a signing secret must be at least 32 bytes long, got 31"):
        Signer("x" * 31, salt="c")
    with pytest.raises(InvalidArgument, match="a Signer needs at least one secret"):
        Signer([], salt="c")
    with pytest.raises(InvalidArgument, match="salt must be a non-empty str naming the use, got ''"):
        Signer(NEW, salt="")
    with pytest.raises(InvalidArgument, match="a secret must be str or bytes, got int"):
        Secret(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="only str values are signed, got bytes"):
        Signer(NEW, salt="c").sign(b"v")  # type: ignore[arg-type]
    assert Signer(NEW, salt="c").unsign(None) is None  # type: ignore[arg-type]
