"""VERIFY.md: how anyone checks a seal bundle with only its public key (tests run its snippets)."""

from string import Template

_VERIFY_MD = Template(
    """# Verifying seal $seal_id

This bundle records that run `$run_id` of `$principal`, under entitlement
`$entitlement_id`, turned the inputs `$inputs_sha256` (run manifest
`$run_manifest_sha256`) into the outputs `$outputs_sha256`, on $issued_at. Mandate signed it
with its Ed25519 key `$kid`.

| file | what it is |
|---|---|
| `seal.json` | the signed payload: canonical JSON (UTF-8, keys sorted, no spaces between tokens, no final newline) |
| `seal.sig` | the Ed25519 signature over exactly the bytes of `seal.json`, standard base64 (padded, one line) |
| `seal.svg` | the seal as a picture; its `<metadata>` carries the same payload, signature and kid |
| `public_key.pem` | the public key `$kid` (SubjectPublicKeyInfo PEM) |
| `VERIFY.md` | this file |

## First, trust the key

`public_key.pem` travels with the bundle, so on its own it only shows that the bundle is
consistent with itself. Make sure `$kid` is the issuer's key: the issuer publishes every key it
has signed with, retired ones included, at `/.well-known/jwks.json`. The Python below prints
the key as that JWK's `x` (the raw 32-byte key, base64url without padding) to compare.

## With OpenSSL (3.0 or later)

```sh
openssl base64 -d -A -in seal.sig -out seal.sig.bin
openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in seal.json -sigfile seal.sig.bin
```

It prints `Signature Verified Successfully` (exit status 0), or `Signature Verification Failure`.

## With Python (`pip install cryptography`)

```python
import base64
import hashlib
import json

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

payload = open("seal.json", "rb").read()
seal = json.loads(payload)
assert payload == json.dumps(seal, sort_keys=True, separators=(",", ":")).encode("utf-8"), "not canonical"
signature = base64.b64decode(open("seal.sig", "rb").read().strip(), validate=True)
key = load_pem_public_key(open("public_key.pem", "rb").read())
key.verify(signature, payload)  # raises cryptography.exceptions.InvalidSignature when it does not hold
print("signature valid:", seal["seal_id"], "signed by", seal["kid"])
raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
print("key (JWK x):", base64.urlsafe_b64encode(raw).rstrip(b"=").decode())

ring = format(int(seal["seal_id"][len("seal_"):], 16), "0128b")
text = "\\n".join([seal["seal_id"], seal["inputs_sha256"], seal["run_manifest_sha256"], seal["outputs_sha256"]])
barcode = hashlib.sha256(text.encode("ascii")).hexdigest()
print("ring:", ring)
print("barcode:", barcode)
```

## With Mandate

`python manage.py verify_seal seal.zip --jwks jwks.json`, with `jwks.json` saved from the
issuer's `/.well-known/jwks.json`, checks the signature and everything below as well (exit
status 0 VERIFIED, 1 INVALID, 2 UNVERIFIED, 3 unreadable); `--public-key FILE` takes one PEM
instead, `--bundle-key` this bundle's own; with none of them it uses the keys of the database
it runs against. `POST /api/seal/verify` with `seal.svg` does the same on the issuer's server.

## The picture: ring and barcode

Both are drawn from the signed payload, so a picture edited to show another seal or other
hashes no longer matches its own metadata.

- **Ring.** The 128 ticks around the emblem are the 128 bits of the seal id's 32 hex digits,
  most significant first, read clockwise from the gold pointer at twelve o'clock: a tall navy
  tick is a 1, a short gold one a 0 (`ring` above). The seal id is also written along the top.
- **Barcode.** The band at the bottom is the SHA-256 of the seal id, the inputs hash, the run
  manifest hash and the outputs hash, one per line, no final newline (`barcode` above; also
  `printf '%s\\n%s\\n%s\\n%s' ID INPUTS MANIFEST OUTPUTS | sha256sum`): 256 modules of equal width
  between two guard patterns (bar, gap, bar), left to right, a dark module for a 1. Its digest is
  printed under the bars.
"""
)


def verify_instructions(payload: dict) -> str:
    return _VERIFY_MD.substitute(payload)
