"""Seals: issued over a run's hashes, signed with the platform's Ed25519 key, verified from the
picture alone; every edit a forger could make is caught (docs/seals.md)."""

import base64
import hashlib
import json
import re
from datetime import datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from evidence.choices import KeyAlgorithm, KeyStatus
from evidence.models import SigningKey
from evidence.seals import FIELDS, canonical_json, issue_seal, load_public_key, verify_seal
from evidence.seals.payload import barcode_digest, ring_bits
from evidence.seals.svg import render_seal
from evidence.services import keys
from tests.seal_world import (
    ISSUED_AT,
    RUN,
    barcode_bars,
    flip_ring_tick,
    issue,
    metadata,
    redrawn,
    replace_metadata,
    with_payload,
)

pytestmark = pytest.mark.django_db

ALL_CHECKS = {"payload", "signature", "ring", "barcode", "drawing", "key_known"}


def failed(verification) -> set:
    return {name for name, passed in verification.checks.items() if not passed}


def other_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- issuing --------------------------------------------------------------------------------


def test_issued_seal_verifies_against_the_published_keys():
    bundle = issue()
    verification = verify_seal(bundle.seal_svg)
    assert verification.status == "VERIFIED" and verification.valid
    assert verification.checks == dict.fromkeys(ALL_CHECKS, True)
    assert verification.seal_id == bundle.seal_id
    assert verification.payload == bundle.seal_json
    assert verification.kid == bundle.seal_json["kid"]
    assert verification.key_status == "active"
    body = verification.as_dict()
    assert {"status", "valid", "seal_id", "payload", "kid", "checks"} <= set(body)
    assert json.loads(json.dumps(body)) == body  # the API can send it as is


def test_payload_holds_exactly_the_sealed_fields_normalised():
    bundle = issue()
    payload = bundle.seal_json
    assert tuple(payload) == FIELDS
    assert payload["inputs_sha256"] == RUN["inputs_sha256"].removeprefix("sha256:")  # prefix dropped
    assert payload["run_manifest_sha256"] == RUN["run_manifest_sha256"]
    assert payload["issued_at"] == "2026-05-01T12:34:56Z"  # RFC 3339 UTC, to the second
    assert re.fullmatch(r"seal_[0-9a-f]{12}7[0-9a-f]{19}", payload["seal_id"])  # UUIDv7
    assert payload["kid"] == keys.active_key(KeyAlgorithm.ED25519).kid
    assert payload["kid"].startswith("ed25519-")
    assert bundle.seal_id == payload["seal_id"]


def test_canonical_json_is_gbx_form_whichever_way_a_verifier_writes_it():
    payload = issue(principal='o"brien\\ops <&> @example.com').seal_json
    expected = canonical_json(payload)
    assert expected == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert expected == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert verify_seal(issue(principal='o"brien\\ops <&> @example.com').seal_svg).status == "VERIFIED"


def test_signature_is_base64_ed25519_over_the_canonical_payload_with_the_bundled_key():
    bundle = issue()
    signature = base64.b64decode(bundle.seal_sig, validate=True)
    assert len(signature) == 64 and base64.b64encode(signature).decode() == bundle.seal_sig
    key = serialization.load_pem_public_key(bundle.public_key_pem.encode())
    key.verify(signature, canonical_json(bundle.seal_json))  # raises if not
    jwk = SigningKey.objects.get(kid=bundle.seal_json["kid"]).public_jwk
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.b64url(raw) == jwk["x"]  # the bundled PEM is the published key


def test_seal_id_and_issued_at_can_be_given():
    bundle = issue(seal_id="seal_" + "0" * 31 + "1")
    assert bundle.seal_id == "seal_00000000000000000000000000000001"
    assert bundle.seal_json["issued_at"] == ISSUED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_issued_at_defaults_to_now():
    before = datetime.now().astimezone()
    stamp = issue_seal(**RUN).seal_json["issued_at"]
    assert before.replace(microsecond=0) <= datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("inputs_sha256", "ABC" + "a" * 61, "inputs_sha256 must be a SHA-256 digest"),
        ("inputs_sha256", "a" * 63, "inputs_sha256 must be a SHA-256 digest"),
        ("outputs_sha256", "sha512:" + "a" * 64, "outputs_sha256 must be a SHA-256 digest"),
        ("run_manifest_sha256", "sha256:" + "g" * 64, "run_manifest_sha256 must be a SHA-256 digest"),
        ("run_manifest_sha256", None, "run_manifest_sha256 must be a SHA-256 digest"),
        ("principal", "", "principal must be a non-empty string"),
        ("principal", "a" * 321, "principal must be at most 320 characters"),
        ("principal", "zoë@example.com", "principal must be printable ASCII"),
        ("principal", "alice\n@example.com", "principal must be printable ASCII"),
        ("principal", " alice@example.com", "principal must not start or end with a space"),
        ("container_image", 42, "container_image must be a non-empty string"),
        ("container_image", "x" * 513, "container_image must be at most 512 characters"),
        ("project_id", ["p"], "project_id must be a non-empty string"),
        ("run_id", "r" * 129, "run_id must be at most 128 characters"),
        ("entitlement_id", "ent\x00", "entitlement_id must be printable ASCII"),
        ("seal_id", "seal_xyz", "seal_id must be 'seal_' and 32 lowercase hex digits"),
        ("seal_id", "SEAL_" + "a" * 32, "seal_id must be 'seal_'"),
        ("issued_at", datetime(2026, 5, 1), "issued_at must be a timezone-aware datetime"),
        ("issued_at", "2026-05-01T00:00:00Z", "issued_at must be a timezone-aware datetime"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        issue(**{field: value})
    assert not SigningKey.objects.exists()  # refused before any key was touched


def test_same_payload_draws_the_same_svg():
    first = issue(seal_id="seal_" + "ab" * 16)
    second = issue(seal_id="seal_" + "ab" * 16)
    assert first.seal_svg == second.seal_svg  # Ed25519 signatures are deterministic too
    assert first.seal_sig == second.seal_sig
    assert issue(seal_id="seal_" + "cd" * 16).seal_svg != first.seal_svg


def test_svg_references_nothing_outside_itself_and_carries_the_signed_metadata():
    bundle = issue()
    svg = bundle.seal_svg
    assert "<script" not in svg and "@import" not in svg and "<style" not in svg
    references = re.findall(r'href="([^"]*)"', svg)
    assert references and all(ref.startswith("#") for ref in references)
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", svg))
    assert not re.search(r"\son[a-z]+=", svg)
    assert metadata(svg, "payload") == canonical_json(bundle.seal_json).decode().replace("&", "&amp;")
    assert metadata(svg, "signature") == bundle.seal_sig
    assert metadata(svg, "kid") == bundle.seal_json["kid"]
    # The ring and the barcode visibly carry the seal id and the barcode digest.
    assert bundle.seal_id in svg.split('data-seal="ring"')[1]
    assert barcode_digest(bundle.seal_json).hex() in svg.split('data-seal="barcode"')[1]


def test_ring_draws_the_seal_id_bits_and_barcode_the_digest_bits():
    bundle = issue(seal_id="seal_" + "f0" * 16)
    bits = ring_bits(bundle.seal_id)
    assert bits[:8] == [1, 1, 1, 1, 0, 0, 0, 0] and len(bits) == 128
    ring = bundle.seal_svg.split('data-seal="ring"')[1].split("</g>")[0]
    assert re.findall(r'<use href="#tick-([01])-', ring) == [str(bit) for bit in bits]
    assert 'id="tick-1-' in ring and 'height="26"' in ring  # a 1 is the tall tick
    # Each barcode bar covers a run of 1 bits, 3 units per bit, after the 3 guard modules.
    digest_bits = "".join(str(bit) for bit in _bits(barcode_digest(bundle.seal_json)))
    runs = [(match.start(), match.end()) for match in re.finditer("1+", digest_bits)]
    bars = barcode_bars(bundle.seal_svg)
    drawn = [tuple(int(n) for n in re.search(r'x="(\d+)" y="528" width="(\d+)"', bar).groups()) for bar in bars]
    left = drawn[0][0] - 3 * (3 + runs[0][0])
    assert drawn == [(left + 3 * (3 + start), 3 * (end - start)) for start, end in runs]
    assert hashlib.sha256(
        "\n".join([bundle.seal_id, *(bundle.seal_json[name] for name in FIELDS[4:7])]).encode()
    ).digest() == barcode_digest(bundle.seal_json)


def _bits(data: bytes):
    return [(byte >> (7 - index)) & 1 for byte in data for index in range(8)]


# --- tampering: every edit is INVALID ------------------------------------------------------------


def test_edited_payload_is_invalid():
    bundle = issue()
    forged = with_payload(bundle.seal_svg, principal="mallory@example.com")
    verification = verify_seal(forged)
    assert verification.status == "INVALID" and not verification.valid
    assert {"signature", "drawing"} <= failed(verification)
    assert verification.payload["principal"] == "mallory@example.com"


@pytest.mark.parametrize(
    "changes",
    [
        {"outputs_sha256": "0" * 64},
        {"inputs_sha256": "1" * 64},
        {"principal": "mallory@example.com"},
        {"entitlement_id": "ent_other"},
        {"issued_at": "2027-01-01T00:00:00Z"},
        {"seal_id": "seal_" + "e" * 32},
    ],
)
def test_payload_redrawn_whole_with_the_old_signature_is_invalid_by_its_signature(changes):
    bundle = issue()
    verification = verify_seal(redrawn(bundle, **changes))
    assert verification.status == "INVALID"
    assert failed(verification) == {"signature"}  # picture and payload agree: only the key can tell


def test_flipped_ring_tick_is_invalid():
    bundle = issue()
    for index in (0, 77, 127):
        verification = verify_seal(flip_ring_tick(bundle.seal_svg, index))
        assert verification.status == "INVALID"
        assert failed(verification) == {"ring"}


def test_seal_id_written_on_the_ring_edited_is_invalid():
    bundle = issue()
    ring_text = f'startOffset="50%">{bundle.seal_id}</textPath>'
    forged = bundle.seal_svg.replace(ring_text, ring_text.replace(bundle.seal_id, "seal_" + "0" * 32))
    assert forged != bundle.seal_svg
    verification = verify_seal(forged)
    assert verification.status == "INVALID" and failed(verification) == {"ring"}


def test_ring_removed_or_doubled_is_invalid():
    bundle = issue()
    start = bundle.seal_svg.index('  <g data-seal="ring">')
    end = bundle.seal_svg.index("</g>", start) + len("</g>\n")
    ring = bundle.seal_svg[start:end]
    assert verify_seal(bundle.seal_svg.replace(ring, "")).status == "INVALID"
    assert verify_seal(bundle.seal_svg.replace(ring, ring + ring)).status == "INVALID"


def test_edited_barcode_is_invalid():
    bundle = issue()
    bar = barcode_bars(bundle.seal_svg)[5]
    wider = re.sub(r'width="(\d+)"', lambda match: f'width="{int(match.group(1)) + 3}"', bar)
    verification = verify_seal(bundle.seal_svg.replace(bar, wider, 1))
    assert verification.status == "INVALID" and failed(verification) == {"barcode"}
    removed = verify_seal(bundle.seal_svg.replace(bar, "", 1))
    assert removed.status == "INVALID" and failed(removed) == {"barcode"}


def test_edited_label_is_invalid():
    bundle = issue()
    forged = bundle.seal_svg.replace(">alice@example.com</text>", ">mallory@example.com</text>")
    assert forged != bundle.seal_svg
    verification = verify_seal(forged)
    assert verification.status == "INVALID" and failed(verification) == {"drawing"}


def test_element_added_to_the_picture_is_invalid():
    bundle = issue()
    forged = bundle.seal_svg.replace("</svg>", '<rect x="0" y="0" width="960" height="640" fill="#fff"/></svg>')
    assert verify_seal(forged).status == "INVALID"
    hidden = verify_seal(bundle.seal_svg.replace('<g data-seal="ring">', '<g data-seal="ring" opacity="0">'))
    assert hidden.status == "INVALID" and "ring" in failed(hidden)


def test_edited_signature_is_invalid():
    bundle = issue()
    signature = bundle.seal_sig
    flipped = ("B" if signature[0] != "B" else "C") + signature[1:]
    verification = verify_seal(replace_metadata(bundle.seal_svg, "signature", flipped))
    assert verification.status == "INVALID" and "signature" in failed(verification)
    for bad in ("", "not base64!", base64.b64encode(b"short").decode()):
        assert verify_seal(replace_metadata(bundle.seal_svg, "signature", bad)).status == "INVALID"


def test_signature_of_another_seal_is_invalid():
    bundle, other = issue(), issue(run_id="run_other")
    verification = verify_seal(render_seal(bundle.seal_json, other.seal_sig))
    assert verification.status == "INVALID" and failed(verification) == {"signature"}


def test_swapped_kid_is_invalid():
    old = issue()
    new_kid = keys.rotate_key(KeyAlgorithm.ED25519).kid
    # The payload names the new (known) key, the picture redrawn: the new key refuses the signature.
    verification = verify_seal(redrawn(old, kid=new_kid))
    assert verification.status == "INVALID" and failed(verification) == {"signature"}
    # Only the metadata's kid changed: it no longer matches the signed payload.
    metadata_only = replace_metadata(old.seal_svg, "kid", new_kid)
    assert verify_seal(metadata_only).status == "INVALID"
    assert "payload" in failed(verify_seal(metadata_only))


def test_swapped_key_is_invalid():
    bundle = issue()
    verification = verify_seal(bundle.seal_svg, public_keys=other_pem())
    assert verification.status == "INVALID" and failed(verification) == {"signature"}
    by_kid = verify_seal(bundle.seal_svg, public_keys={bundle.seal_json["kid"]: other_pem()})
    assert by_kid.status == "INVALID"


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace(",", ", "),  # not compact
        lambda text: json.dumps(dict(reversed(json.loads(text).items())), separators=(",", ":")),  # not sorted
        lambda text: text.replace('"inputs_sha256":"', '"inputs_sha256":"sha256:'),  # prefix stored
        lambda text: re.sub(r'"issued_at":"[0-9]{4}', '"issued_at":"\uff12\uff10\uff12\uff16', text),  # fullwidth
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "project_id"}, sort_keys=True),
        lambda text: text[:-1] + ',"zone":"eu"}',  # a field a seal does not have
        lambda text: "[1,2,3]",
        lambda text: "{not json",
        lambda text: "",
    ],
)
def test_payload_not_canonical_or_incomplete_is_invalid(edit):
    bundle = issue()
    text = metadata(bundle.seal_svg, "payload")
    verification = verify_seal(replace_metadata(bundle.seal_svg, "payload", edit(text)))
    assert verification.status == "INVALID"
    assert "payload" in failed(verification) and "signature" in failed(verification)
    assert verification.problems


def test_seal_metadata_without_its_signature_is_invalid():
    bundle = issue()
    stripped = re.sub(r"\s*<seal:signature[^>]*>.*?</seal:signature>", "", bundle.seal_svg, flags=re.S)
    verification = verify_seal(stripped)
    assert verification.status == "INVALID"
    assert any("signature" in problem for problem in verification.problems)


# --- keys: unknown, retired, supplied ---------------------------------------------------------------


def test_unknown_kid_is_unverified():
    bundle = issue()
    verification = verify_seal(bundle.seal_svg, public_keys={})
    assert verification.status == "UNVERIFIED" and not verification.valid
    assert failed(verification) == {"key_known", "signature"}
    assert verification.key_status is None
    SigningKey.objects.all().delete()  # a database that never had the key
    assert verify_seal(bundle.seal_svg).status == "UNVERIFIED"


def test_unknown_kid_and_an_edit_is_invalid_not_unverified():
    bundle = issue()
    SigningKey.objects.all().delete()
    assert verify_seal(flip_ring_tick(bundle.seal_svg, 3)).status == "INVALID"


def test_seal_signed_by_a_retired_key_still_verifies():
    old = issue()
    keys.rotate_key(KeyAlgorithm.ED25519)
    assert SigningKey.objects.get(kid=old.seal_json["kid"]).status == KeyStatus.RETIRED
    verification = verify_seal(old.seal_svg)
    assert verification.status == "VERIFIED" and verification.key_status == "retired"
    new = issue()
    assert new.seal_json["kid"] != old.seal_json["kid"]  # new seals use the new key
    assert verify_seal(new.seal_svg).key_status == "active"


def test_seal_signed_with_a_key_rotated_by_another_process_uses_the_new_key():
    issue()  # caches the active signer in this process
    SigningKey.objects.update(status=KeyStatus.RETIRED)  # another process rotated
    fresh = issue()
    assert SigningKey.objects.get(kid=fresh.seal_json["kid"]).status == KeyStatus.ACTIVE


@pytest.mark.parametrize("form", ["pem text", "pem bytes", "mapping", "key object", "jwk"])
def test_offline_verification_with_the_public_key_alone(form):
    bundle = issue()
    kid = bundle.seal_json["kid"]
    pem = bundle.public_key_pem
    supplied = {
        "pem text": pem,
        "pem bytes": pem.encode(),
        "mapping": {kid: pem, "ed25519-other": other_pem()},
        "key object": load_public_key(pem),
        "jwk": SigningKey.objects.get(kid=kid).public_jwk,
    }[form]
    SigningKey.objects.all().delete()
    verification = verify_seal(bundle.seal_svg, public_keys=supplied)
    assert verification.status == "VERIFIED" and verification.key_status == "supplied"


@pytest.mark.parametrize("bad", ["not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 42])
def test_a_bad_public_key_is_a_value_error_not_a_verdict(bad):
    bundle = issue()
    with pytest.raises(ValueError, match="public key|PEM"):
        verify_seal(bundle.seal_svg, public_keys=bad)


def test_a_non_ed25519_public_key_is_refused():
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        verify_seal(issue().seal_svg, public_keys=pem)


def test_seal_verifies_from_text_or_bytes_and_after_reformatting_whitespace():
    bundle = issue()
    assert verify_seal(bundle.seal_svg.encode()).status == "VERIFIED"
    compact = re.sub(r">\s+<", "><", bundle.seal_svg)
    assert verify_seal(compact).status == "VERIFIED"
    reordered = bundle.seal_svg.replace(
        '<rect x="4" y="4" width="952" height="632" rx="20"', '<rect rx="20" height="632" width="952" y="4" x="4"'
    )
    assert reordered != bundle.seal_svg and verify_seal(reordered).status == "VERIFIED"
