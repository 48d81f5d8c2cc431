import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management.base import BaseCommand, CommandError

from governance.errors import DomainError
from governance.gate.jws import b64url
from governance.gate.operator_keys import check_jkt, create_operator_key, jkt_of_jwk
from governance.models import Organization


def _jwk_from_file(path: str) -> dict:
    """A public JWK from a JSON file, or from a PEM key (public or private: LatchGate's
    ``.latchgate/<name>.pem`` works as it is)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                key = serialization.load_pem_private_key(data, password=None).public_key()
            except (ValueError, TypeError) as exc:
                raise CommandError(f"{path}: not a PEM key without a password ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CommandError(f"{path}: the key must be EC P-256")
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    try:
        return json.loads(data)
    except ValueError:
        raise CommandError(f"{path}: neither a JWK (JSON) nor a PEM key") from None


class Command(BaseCommand):
    help = (
        "Create an operator key (mdo_...) bound to a DPoP key; the key is printed once. Use it as "
        "`Authorization: DPoP <key>` with a DPoP proof made by that key pair (docs/gate.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the operator's name, recorded on everything the key does")
        bound = parser.add_mutually_exclusive_group(required=True)
        bound.add_argument("--jwk-file", help="the operator's EC P-256 public key: a JWK (JSON) or a PEM file")
        bound.add_argument("--jkt", help="the RFC 7638 thumbprint of the operator's DPoP public key")
        parser.add_argument("--organization", help="organization slug (default: MANDATE_DEFAULT_ORGANIZATION)")
        parser.add_argument("--created-by", default="", help="who asked for the key (recorded)")

    def handle(self, *args, name, jwk_file, jkt, organization, created_by, **options):
        org = None
        if organization:
            org = Organization.objects.filter(slug=organization).first()
            if org is None:
                raise CommandError(f"no organization {organization!r}")
        try:
            bound_jkt = jkt_of_jwk(_jwk_from_file(jwk_file)) if jwk_file else check_jkt(jkt)
            key, secret = create_operator_key(name, jkt=bound_jkt, created_by=created_by, organization=org)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"operator key {key.name!r} bound to jkt {key.jkt}; the key is shown only now:")
        self.stdout.write(secret)
