"""The seal bundle (seal.json, seal.sig, seal.svg, public_key.pem, VERIFY.md) and
``manage.py verify_seal`` on a seal.svg or a bundle, with the database's keys or offline; the
instructions in VERIFY.md, run as written."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command

from evidence.choices import KeyAlgorithm
from evidence.models import SigningKey
from evidence.seals import SealUnreadable, bundle_zip, canonical_json, verify_bundle
from evidence.seals.bundle import MAX_BUNDLE_BYTES
from evidence.seals.payload import barcode_digest
from evidence.services import keys
from tests.seal_world import flip_ring_tick, issue, with_payload

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["seal.json", "seal.sig", "seal.svg", "public_key.pem", "VERIFY.md"]


def files_of(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(files: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def run(*args) -> tuple[int, str, str]:
    """``manage.py verify_seal`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_seal", *[str(arg) for arg in args], stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sealed(tmp_path):
    """A seal as its svg, its bundle and its public key, in files."""
    bundle = issue()
    (tmp_path / "seal.svg").write_text(bundle.seal_svg)
    (tmp_path / "seal.zip").write_bytes(bundle_zip(bundle))
    (tmp_path / "public_key.pem").write_text(bundle.public_key_pem)
    return bundle, tmp_path


# --- the bundle ------------------------------------------------------------------------------


def test_bundle_holds_the_five_files_with_the_signed_bytes():
    bundle = issue()
    data = bundle_zip(bundle)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == NAMES
        assert archive.testzip() is None
    files = files_of(data)
    assert files["seal.json"] == canonical_json(bundle.seal_json)  # exactly the signed bytes, no newline
    assert files["seal.sig"] == bundle.seal_sig.encode()
    assert files["seal.svg"].decode() == bundle.seal_svg
    assert files["public_key.pem"].decode() == bundle.public_key_pem
    assert files["public_key.pem"].startswith(b"-----BEGIN PUBLIC KEY-----")
    verify_md = files["VERIFY.md"].decode()
    assert verify_md == bundle.verify_md
    assert bundle.seal_id in verify_md and bundle.seal_json["kid"] in verify_md
    assert "openssl pkeyutl -verify" in verify_md and "load_pem_public_key" in verify_md


def test_bundle_is_the_same_bytes_for_the_same_seal():
    first = issue(seal_id="seal_" + "12" * 16)
    assert bundle_zip(first) == bundle_zip(issue(seal_id="seal_" + "12" * 16))


def test_bundle_of_a_seal_dated_outside_what_zip_dates_hold_is_still_written():
    from datetime import UTC, datetime

    for moment in (datetime(1970, 1, 1, tzinfo=UTC), datetime(2500, 1, 1, tzinfo=UTC)):
        data = bundle_zip(issue(issued_at=moment))
        assert verify_bundle(data).status == "VERIFIED"


def test_bundle_verifies_with_its_files_in_agreement():
    verification = verify_bundle(bundle_zip(issue()))
    assert verification.status == "VERIFIED" and verification.checks["bundle"]


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("seal.json", lambda data: data.replace(b"alice", b"mallo")),
        ("seal.json", lambda data: data + b"\n"),
        ("seal.sig", lambda data: (b"A" if data[:1] != b"A" else b"B") + data[1:]),
        ("public_key.pem", lambda data: b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"),
        ("public_key.pem", None),
        ("seal.sig", None),
    ],
)
def test_bundle_whose_files_disagree_with_its_seal_is_invalid(name, edit):
    files = files_of(bundle_zip(issue()))
    if edit is None:
        del files[name]
    else:
        files[name] = edit(files[name])
    verification = verify_bundle(rezip(files))
    assert verification.status == "INVALID"
    assert not verification.checks["bundle"]
    assert all(passed for check, passed in verification.checks.items() if check != "bundle")


def test_bundle_with_another_keys_pem_is_invalid_even_offline():
    files = files_of(bundle_zip(issue()))
    files["public_key.pem"] = issue_from_another_database().public_key_pem.encode()
    assert verify_bundle(rezip(files)).status == "INVALID"
    assert verify_bundle(rezip(files), use_bundle_key=True).status == "INVALID"


def issue_from_another_database():
    SigningKey.objects.filter(algorithm=KeyAlgorithm.ED25519).delete()
    keys.forget_active_signers()
    return issue(run_id="run_elsewhere")


def test_hostile_zips_are_unreadable():
    bundle = issue()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("seal.svg", b"\0" * (20 * 1024 * 1024))  # 20 MiB that packs into ~20 KB
    with pytest.raises(SealUnreadable, match="larger than"):
        verify_bundle(bomb.getvalue())
    with pytest.raises(SealUnreadable, match="not a readable zip"):
        verify_bundle(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(SealUnreadable, match="no seal.svg"):
        verify_bundle(rezip({"seal.json": b"{}"}))
    twice = io.BytesIO()
    with zipfile.ZipFile(twice, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("seal.svg", bundle.seal_svg)
        archive.writestr("seal.svg", bundle.seal_svg)
    with pytest.raises(SealUnreadable, match="more than once"):
        verify_bundle(twice.getvalue())
    with pytest.raises(SealUnreadable, match="larger than"):
        verify_bundle(b"PK\x03\x04" + b"\0" * MAX_BUNDLE_BYTES)
    with pytest.raises(SealUnreadable, match="DTD"):
        verify_bundle(rezip({"seal.svg": b'<!DOCTYPE svg [<!ENTITY x "y">]><svg/>'}))


# --- the command -------------------------------------------------------------------------------


def test_command_verifies_svg_and_zip_with_the_database_keys(sealed):
    bundle, folder = sealed
    for name in ("seal.svg", "seal.zip"):
        code, out, _ = run(folder / name)
        assert code == 0, out
        assert out.startswith(f"VERIFIED: {bundle.seal_id}")
        assert "this database's published keys: the active key" in out
        for check in ("payload", "signature", "ring", "barcode", "drawing", "key_known"):
            assert re.search(rf"ok +{check} ", out), out
    assert re.search(r"ok +bundle ", run(folder / "seal.zip")[1])


def test_command_verifies_offline_with_the_public_key(sealed):
    bundle, folder = sealed
    for name in ("seal.svg", "seal.zip"):
        code, out, _ = run(folder / name, "--public-key", folder / "public_key.pem")
        assert code == 0 and f"from {folder / 'public_key.pem'}" in out


def test_command_verifies_offline_with_the_issuers_published_key_set(sealed, tmp_path):
    _, folder = sealed
    keys.rotate_key(KeyAlgorithm.ED25519)  # the seal's key is retired, still in the set
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    SigningKey.objects.all().delete()  # nothing from this database is used
    for name in ("seal.svg", "seal.zip"):
        code, out, _ = run(folder / name, "--jwks", tmp_path / "jwks.json")
        assert code == 0 and f"from the key set {tmp_path / 'jwks.json'}" in out, out
    bad_key = {"kty": "OKP", "crv": "Ed25519", "kid": "x", "x": "AA"}
    (tmp_path / "other.json").write_text(json.dumps({"keys": [bad_key]}))
    assert run(folder / "seal.svg", "--jwks", tmp_path / "other.json")[0] == 3  # not a key
    (tmp_path / "empty.json").write_text('{"keys": []}')
    assert run(folder / "seal.svg", "--jwks", tmp_path / "empty.json")[0] == 2
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run(folder / "seal.svg", "--jwks", tmp_path / "broken.json")
    assert code == 3 and "--jwks" in err


def test_command_says_a_retired_key_is_still_published(sealed):
    _, folder = sealed
    keys.rotate_key(KeyAlgorithm.ED25519)
    code, out, _ = run(folder / "seal.svg")
    assert code == 0 and "a retired key, still published" in out


def test_command_exit_1_for_an_edited_seal(sealed, tmp_path):
    bundle, folder = sealed
    forged = tmp_path / "forged.svg"
    forged.write_text(flip_ring_tick(with_payload(bundle.seal_svg, outputs_sha256="0" * 64), 9))
    for extra in ([], ["--public-key", folder / "public_key.pem"]):
        code, out, _ = run(forged, *extra)
        assert code == 1 and out.startswith("INVALID")
        assert re.search(r"FAIL +signature", out) and re.search(r"FAIL +ring", out)
        assert "- the ring drawn is not the ring of this payload" in out
    files = files_of(bundle_zip(bundle))
    files["seal.svg"] = forged.read_bytes()
    (tmp_path / "forged.zip").write_bytes(rezip(files))
    assert run(tmp_path / "forged.zip")[0] == 1


def test_command_exit_1_for_the_wrong_public_key(sealed, tmp_path):
    _, folder = sealed
    other = issue_from_another_database()
    (tmp_path / "other.pem").write_text(other.public_key_pem)
    code, out, _ = run(folder / "seal.svg", "--public-key", tmp_path / "other.pem")
    assert code == 1 and re.search(r"FAIL +signature", out)


def test_bundle_from_another_database_is_unverified_here_and_verified_with_its_key(sealed):
    bundle, folder = sealed
    SigningKey.objects.all().delete()  # this database never had the key
    for name in ("seal.svg", "seal.zip"):
        code, out, _ = run(folder / name)
        assert code == 2 and out.startswith("UNVERIFIED"), out
        assert re.search(r"FAIL +key_known", out) and "--public-key" in out
    code, out, _ = run(folder / "seal.zip", "--public-key", folder / "public_key.pem")
    assert code == 0 and out.startswith("VERIFIED")
    code, out, _ = run(folder / "seal.zip", "--bundle-key")
    assert code == 0 and "not who signed it" in out


def test_command_exit_3_for_what_it_cannot_read(sealed, tmp_path):
    _, folder = sealed
    (tmp_path / "notes.txt").write_text("not a seal at all")
    (tmp_path / "bad.pem").write_text("not a key")
    cases = [
        ([tmp_path / "notes.txt"], "unreadable seal: not well-formed XML"),
        ([tmp_path / "missing.svg"], "cannot read"),
        ([folder / "seal.svg", "--public-key", tmp_path / "bad.pem"], "--public-key"),
        ([folder / "seal.svg", "--public-key", tmp_path / "missing.pem"], "cannot read"),
        ([folder / "seal.svg", "--bundle-key"], "needs a bundle"),
    ]
    for args, message in cases:
        code, out, err = run(*args)
        assert code == 3 and message in err, (args, out, err)


def test_command_runs_offline_in_its_own_process_without_any_database(sealed):
    _, folder = sealed
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",  # nothing listens there
        "DJANGO_SETTINGS_MODULE": "governance.settings",
        "SECRET_KEY": "offline-check",
    }
    command = [sys.executable, "manage.py", "verify_seal", str(folder / "seal.zip")]
    offline = subprocess.run(
        [*command, "--public-key", str(folder / "public_key.pem")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert offline.returncode == 0 and offline.stdout.startswith("VERIFIED"), offline.stderr
    no_keys = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert no_keys.returncode == 3 and "--public-key" in no_keys.stderr


# --- VERIFY.md, followed as written -----------------------------------------------------------------


def fenced(markdown: str, language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", markdown, re.S).group(1)


def test_verify_md_python_checks_the_bundle_with_only_its_files(tmp_path):
    bundle = issue()
    with zipfile.ZipFile(io.BytesIO(bundle_zip(bundle))) as archive:
        archive.extractall(tmp_path)
    snippet = fenced(bundle.verify_md, "python")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ring = format(int(bundle.seal_id[5:], 16), "0128b")
    assert f"signature valid: {bundle.seal_id}" in done.stdout
    assert f"ring: {ring}" in done.stdout
    assert f"barcode: {barcode_digest(bundle.seal_json).hex()}" in done.stdout
    jwk = SigningKey.objects.get(kid=bundle.seal_json["kid"]).public_jwk
    assert f"key (JWK x): {jwk['x']}" in done.stdout

    (tmp_path / "seal.json").write_bytes(canonical_json({**bundle.seal_json, "run_id": "run_forged"}))
    forged = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True)
    assert forged.returncode != 0 and "InvalidSignature" in forged.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_verify_md_openssl_commands_verify_the_bundle(tmp_path):
    bundle = issue()
    with zipfile.ZipFile(io.BytesIO(bundle_zip(bundle))) as archive:
        archive.extractall(tmp_path)
    script = fenced(bundle.verify_md, "sh")
    done = subprocess.run(["sh", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, done.stdout + done.stderr

    (tmp_path / "seal.json").write_bytes((tmp_path / "seal.json").read_bytes().replace(b"alice", b"mallo"))
    forged = subprocess.run(["sh", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert forged.returncode != 0 and "Signature Verification Failure" in forged.stdout + forged.stderr
