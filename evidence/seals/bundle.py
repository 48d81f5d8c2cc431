"""The seal bundle (GBX's): one zip of seal.json, seal.sig, seal.svg, public_key.pem and VERIFY.md,
written deterministically and read back as hostile input."""

import base64
import binascii
import io
import zipfile
import zlib
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.exceptions import InvalidSignature

from evidence.canonical import NonCanonical
from evidence.seals.issue import SealBundle
from evidence.seals.payload import canonical_json
from evidence.seals.verify import (
    MAX_SEAL_BYTES,
    SealUnreadable,
    SealVerification,
    load_public_key,
    verify_seal,
    with_check,
)

MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 32
# The files verification reads, and the most each may hold (seal.svg one byte more than a seal
# may be, so that verify_seal names the problem).
LIMITS = {"seal.svg": MAX_SEAL_BYTES + 1, "seal.json": 16384, "seal.sig": 1024, "public_key.pem": 16384}
ZIP_EARLIEST, ZIP_LATEST = (1980, 1, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58)
KEY_BUNDLED = "bundle"  # the key_status when the bundle's own public_key.pem checked the signature


def bundle_zip(bundle: SealBundle) -> bytes:
    """The bundle as a zip, the same bytes for the same seal: entries in a fixed order, dated
    ``issued_at``, mode 0644."""
    moment = datetime.strptime(bundle.seal_json["issued_at"], "%Y-%m-%dT%H:%M:%SZ").timetuple()[:6]
    moment = min(max(moment, ZIP_EARLIEST), ZIP_LATEST)  # what a zip's DOS dates can hold
    files = (
        ("seal.json", bundle.seal_json_bytes),
        ("seal.sig", bundle.seal_sig.encode("ascii")),
        ("seal.svg", bundle.seal_svg.encode("utf-8")),
        ("public_key.pem", bundle.public_key_pem.encode("ascii")),
        ("VERIFY.md", bundle.verify_md.encode("utf-8")),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=moment)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the platform writing it
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@dataclass(frozen=True)
class BundleFiles:
    svg: bytes
    seal_json: bytes | None
    seal_sig: bytes | None
    public_key_pem: bytes | None


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def read_bundle(data: bytes) -> BundleFiles:
    """The files verification needs from a bundle; SealUnreadable for a zip that is not one
    (too large, damaged, encrypted, duplicated names, no seal.svg)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise SealUnreadable(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ENTRIES:
                raise SealUnreadable(f"the bundle holds more than {MAX_ENTRIES} files")
            names = [entry.filename for entry in entries]
            found = {}
            for name, limit in LIMITS.items():
                if names.count(name) > 1:
                    raise SealUnreadable(f"the bundle holds {name} more than once")
                if name in names:
                    with archive.open(name) as member:
                        found[name] = member.read(limit + 1)
                    if len(found[name]) > limit:
                        raise SealUnreadable(f"{name} in the bundle is larger than {limit} bytes")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as error:
        raise SealUnreadable(f"not a readable zip: {error}") from None
    except (RuntimeError, NotImplementedError) as error:  # encrypted, or an unknown compression
        raise SealUnreadable(f"the bundle cannot be read: {error}") from None
    if "seal.svg" not in found:
        raise SealUnreadable("not a seal bundle: it has no seal.svg")
    return BundleFiles(found["seal.svg"], found.get("seal.json"), found.get("seal.sig"), found.get("public_key.pem"))


def verify_bundle(data: bytes, *, public_keys=None, use_bundle_key: bool = False) -> SealVerification:
    """``verify_seal`` on the bundle's seal.svg, plus the ``bundle`` check: seal.json is the
    signed payload, seal.sig the signature, and public_key.pem verifies it. With
    ``use_bundle_key`` the bundle's own public_key.pem checks the signature (key_status
    "bundle"): that proves the bundle consistent, not who signed it."""
    files = read_bundle(data)
    if use_bundle_key:
        public_keys = _bundle_key(files)
    verification = verify_seal(files.svg, public_keys=public_keys)
    if use_bundle_key and verification.key_status is not None:
        verification = replace(verification, key_status=KEY_BUNDLED)
    problem = _disagreement(files, verification)
    return with_check(verification, "bundle", problem is None, problem)


def _bundle_key(files: BundleFiles):
    if files.public_key_pem is None:
        raise SealUnreadable("the bundle has no public_key.pem to verify with")
    try:
        return load_public_key(files.public_key_pem)
    except ValueError as error:
        raise SealUnreadable(f"the bundle's public_key.pem: {error}") from None


def _disagreement(files: BundleFiles, verification: SealVerification) -> str | None:
    """Why the bundle's other files do not agree with its seal.svg, or None."""
    missing = [name for name in ("seal.json", "seal.sig", "public_key.pem") if getattr(files, _field(name)) is None]
    if missing:
        return f"the bundle lacks {', '.join(missing)}"
    try:
        signed = canonical_json(verification.payload) if isinstance(verification.payload, dict) else None
    except NonCanonical:
        signed = None
    if signed is None or files.seal_json != signed:
        return "seal.json is not the payload signed in seal.svg"
    if verification.signature is None or files.seal_sig.strip() != verification.signature.encode("ascii", "replace"):
        return "seal.sig is not the signature in seal.svg"
    try:
        key = load_public_key(files.public_key_pem)
        key.verify(_signature_bytes(verification.signature), signed)
    except (ValueError, binascii.Error, InvalidSignature):
        return "public_key.pem does not verify the seal's signature"
    return None


def _field(name: str) -> str:
    return name.replace(".", "_")  # seal.json -> BundleFiles.seal_json


def _signature_bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
