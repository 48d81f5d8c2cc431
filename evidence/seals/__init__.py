"""Verifiable seals (GBX): a signed, self-verifying SVG proving which inputs produced which
outputs under which entitlement (docs/seals.md). The entitlements app issues and stores them;
this package makes, draws, bundles and verifies them."""

from evidence.seals.bundle import BundleFiles, bundle_zip, is_zip, read_bundle, verify_bundle
from evidence.seals.issue import SealBundle, issue_seal
from evidence.seals.payload import FIELDS, canonical_json
from evidence.seals.verify import (
    INVALID,
    UNVERIFIED,
    VERIFIED,
    SealUnreadable,
    SealVerification,
    keys_from_jwks,
    load_public_key,
    verify_seal,
)

__all__ = [
    "FIELDS",
    "INVALID",
    "UNVERIFIED",
    "VERIFIED",
    "BundleFiles",
    "SealBundle",
    "SealUnreadable",
    "SealVerification",
    "bundle_zip",
    "canonical_json",
    "is_zip",
    "issue_seal",
    "keys_from_jwks",
    "load_public_key",
    "read_bundle",
    "verify_bundle",
    "verify_seal",
]
