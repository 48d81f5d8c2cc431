import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from evidence.seals import SealUnreadable, is_zip, keys_from_jwks, verify_bundle, verify_seal
from evidence.seals.bundle import KEY_BUNDLED, MAX_BUNDLE_BYTES

EXIT_CODES = {"VERIFIED": 0, "INVALID": 1, "UNVERIFIED": 2}
UNREADABLE = 3
MAX_JWKS_BYTES = 1024 * 1024
KEY_WORDS = {"active": ": the active key", "retired": ": a retired key, still published"}
CHECK_WORDS = {
    "payload": "the metadata's payload is canonical JSON with the eleven sealed fields",
    "signature": "the Ed25519 signature over the payload holds",
    "ring": "the outer ring draws this seal id",
    "barcode": "the barcode band draws this payload's hashes",
    "drawing": "the rest of the picture (labels, frame, metadata) is this payload's",
    "key_known": "the key set used has the seal's key",
    "bundle": "seal.json, seal.sig and public_key.pem agree with seal.svg",
}


class Command(BaseCommand):
    help = (
        "Verify a seal.svg or a seal bundle (.zip). Exit status: 0 VERIFIED, 1 INVALID, 2 UNVERIFIED, "
        "3 unreadable (or no key to verify with)."
    )
    requires_system_checks = []  # offline with --public-key: nothing here needs the database

    def add_arguments(self, parser):
        parser.add_argument("file", help="seal.svg, or a bundle zip (seal.zip)")
        key = parser.add_mutually_exclusive_group()
        key.add_argument(
            "--public-key",
            metavar="PEM",
            help="verify offline with this Ed25519 public key (SubjectPublicKeyInfo PEM file)",
        )
        key.add_argument(
            "--jwks",
            metavar="FILE",
            help="verify offline with the issuer's published key set (a saved /.well-known/jwks.json)",
        )
        key.add_argument(
            "--bundle-key",
            action="store_true",
            help="verify a bundle with its own public_key.pem: proves the bundle consistent, not who signed it",
        )

    def handle(self, *args, file, public_key=None, jwks=None, bundle_key=False, **options):
        code = self._verify(Path(file), public_key, jwks, bundle_key)
        if code:
            sys.exit(code)

    def _verify(self, path: Path, public_key: str | None, jwks: str | None, bundle_key: bool) -> int:
        try:
            data = _read(path, MAX_BUNDLE_BYTES)
            keys = _read(Path(public_key), 16384) if public_key else None
            if jwks:
                keys = keys_from_jwks(json.loads(_read(Path(jwks), MAX_JWKS_BYTES)))
        except OSError as error:
            return self._unreadable(f"cannot read {error.filename}: {error.strerror}")
        except (ValueError, RecursionError) as error:
            return self._unreadable(f"--jwks {jwks}: {error}")
        try:
            if is_zip(data):
                verification = verify_bundle(data, public_keys=keys, use_bundle_key=bundle_key)
            elif bundle_key:
                return self._unreadable("--bundle-key needs a bundle (.zip); a seal.svg carries no public key")
            else:
                verification = verify_seal(data, public_keys=keys)
        except SealUnreadable as error:
            return self._unreadable(f"unreadable seal: {error}")
        except ValueError as error:  # the --public-key file
            return self._unreadable(f"--public-key {public_key}: {error}")
        except DatabaseError as error:
            return self._unreadable(f"cannot read the published keys ({error}); verify offline with --public-key")
        self._report(verification, source=_source(public_key, jwks, bundle_key))
        return EXIT_CODES[verification.status]

    def _report(self, verification, source: str) -> None:
        write = self.stdout.write
        write(f"{verification.status}: {verification.seal_id or 'seal with no readable id'}")
        key = f"key {verification.kid}" if verification.kid else "no key named"
        status = KEY_WORDS.get(verification.key_status, "")
        write(f"  {key} ({source}{status})")
        for name, passed in verification.checks.items():
            write(f"  {'ok  ' if passed else 'FAIL'} {name:<9} {CHECK_WORDS.get(name, name)}")
        for problem in verification.problems:
            write(f"  - {problem}")
        if verification.key_status == KEY_BUNDLED:
            write(
                "  note: checked with the bundle's own public_key.pem: this shows the bundle is consistent, "
                "not who signed it, unless you trust that key"
            )
        elif verification.status == "UNVERIFIED":
            write("  note: the key is unknown here; verify with the issuer's key: --public-key PEM or --jwks FILE")

    def _unreadable(self, message: str) -> int:
        self.stderr.write(message)
        return UNREADABLE


def _read(path: Path, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes: what lies beyond is refused by the reader, not loaded."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def _source(public_key: str | None, jwks: str | None, bundle_key: bool) -> str:
    if public_key:
        return f"from {public_key}"
    if jwks:
        return f"from the key set {jwks}"
    if bundle_key:
        return "from the bundle's public_key.pem"
    return "from this database's published keys"
