"""The lease signing key, as governance reaches it.

Leases are signed with evidence's ES256 platform key (persisted, rotated, published in
``/.well-known/jwks.json``). Evidence sits above governance, so ``EvidenceConfig.ready``
hands this module three functions (``use_keys``), as it hands ``governance.audit`` its
recorder: the active key's id, a signer (``data -> signature`` with ``.kid`` and ``.value``,
``r || s``), and a verifier by key id that knows retired keys too.
"""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

from governance.gate.jws import b64url, json_segment

_active_kid: Callable[[], str] | None = None
_sign: Callable[[bytes], object] | None = None
_verify: Callable[[str, bytes, bytes], bool] | None = None


def use_keys(*, active_kid: Callable[[], str], sign: Callable[[bytes], object], verify: Callable) -> None:
    global _active_kid, _sign, _verify
    _active_kid, _sign, _verify = active_kid, sign, verify


def _require():
    if _active_kid is None or _sign is None or _verify is None:
        raise ImproperlyConfigured("no lease signing key: EvidenceConfig.ready wires governance.gate.signing")


def sign_jwt(claims: dict) -> tuple[str, str]:
    """``(compact ES256 JWT, kid)``. The header names the active key; should a rotation land
    between naming it and signing, the JWT is made again with the key that signed."""
    _require()
    kid = _active_kid()
    for _ in range(3):
        signing_input = f"{json_segment({'alg': 'ES256', 'typ': 'JWT', 'kid': kid})}.{json_segment(claims)}"
        signature = _sign(signing_input.encode("ascii"))
        if signature.kid == kid:
            return f"{signing_input}.{b64url(signature.value)}", kid
        kid = signature.kid
    raise RuntimeError("the lease signing key kept rotating while signing")


def verify_signature(kid: str, signing_input: bytes, signature: bytes) -> bool:
    """Whether the key ``kid`` (active or retired) made ``signature``; False for an unknown kid."""
    _require()
    return bool(_verify(kid, signing_input, signature))
