"""Encryption at rest for secrets Mandate must read back (private keys, webhook secrets).

The Fernet key is derived (HKDF-SHA256) from MANDATE_ENCRYPTION_KEY, or from
SECRET_KEY when that is unset. Changing it makes stored secrets unreadable: see
docs/configuration.md.
"""

import base64
from functools import cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


@cache
def _fernet(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mandate-at-rest", info=b"fernet").derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _current() -> Fernet:
    return _fernet(settings.MANDATE_ENCRYPTION_KEY or settings.SECRET_KEY)


def encrypt_at_rest(plaintext: bytes) -> str:
    return _current().encrypt(plaintext).decode()


def decrypt_at_rest(token: str) -> bytes:
    return _current().decrypt(token.encode())
