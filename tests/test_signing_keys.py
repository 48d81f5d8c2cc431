import pytest
from django.core.management import call_command

from evidence.choices import KeyAlgorithm, KeyStatus
from evidence.models import SigningKey
from evidence.services import keys
from evidence.services.keys import b64url_decode

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ED25519, KeyAlgorithm.ES256])
def test_key_is_created_on_first_use_and_signatures_verify_with_the_public_jwk(algorithm, client):
    assert not SigningKey.objects.exists()
    signature = keys.sign(algorithm, b"receipt-hash")
    key = SigningKey.objects.get()
    assert (key.kid, key.algorithm, key.status) == (signature.kid, algorithm, KeyStatus.ACTIVE)
    assert len(signature.value) == 64

    published = client.get("/.well-known/jwks.json").json()["keys"]
    jwk = next(k for k in published if k["kid"] == signature.kid)
    assert jwk["alg"] == algorithm and jwk["use"] == "sig"
    assert keys.verify_with_jwk(jwk, b"receipt-hash", signature.value)
    assert not keys.verify_with_jwk(jwk, b"another-hash", signature.value)


def test_key_persists_across_restarts():
    first = keys.sign(KeyAlgorithm.ED25519, b"x")
    keys._private_key.cache_clear()  # what a new process starts with
    second = keys.sign(KeyAlgorithm.ED25519, b"x")
    assert first.kid == second.kid
    assert SigningKey.objects.count() == 1


def test_rotation_keeps_old_keys_published_so_old_signatures_verify(client):
    old = keys.sign(KeyAlgorithm.ED25519, b"old receipt")
    call_command("rotate_signing_key", algorithm="EdDSA")
    new = keys.sign(KeyAlgorithm.ED25519, b"new receipt")
    assert new.kid != old.kid
    assert SigningKey.objects.get(kid=old.kid).status == KeyStatus.RETIRED
    assert SigningKey.objects.get(kid=new.kid).status == KeyStatus.ACTIVE

    published = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert {old.kid, new.kid} <= set(published)
    assert keys.verify_with_jwk(published[old.kid], b"old receipt", old.value)
    assert keys.verify(new.kid, b"new receipt", new.value)


def test_private_keys_are_encrypted_at_rest_and_never_published(client):
    keys.sign(KeyAlgorithm.ES256, b"x")
    key = SigningKey.objects.get()
    assert "PRIVATE KEY" not in key.private_key_encrypted
    body = client.get("/.well-known/jwks.json").content.decode()
    assert key.private_key_encrypted not in body
    assert '"d"' not in body  # the JWK private parameter


def test_es256_jwk_has_p256_coordinates():
    keys.sign(KeyAlgorithm.ES256, b"x")
    jwk = SigningKey.objects.get().public_jwk
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert len(b64url_decode(jwk["x"])) == 32 and len(b64url_decode(jwk["y"])) == 32


def test_only_one_key_per_algorithm_is_active():
    keys.active_key(KeyAlgorithm.ED25519)
    keys.active_key(KeyAlgorithm.ED25519)
    keys.rotate_key(KeyAlgorithm.ED25519)
    assert SigningKey.objects.filter(algorithm="EdDSA", status=KeyStatus.ACTIVE).count() == 1
    assert SigningKey.objects.filter(algorithm="EdDSA").count() == 2
