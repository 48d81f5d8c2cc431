"""Test settings: the real settings, with a throwaway var dir and fast password hashing."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "mandate-test-secret-key")
os.environ.setdefault("MANDATE_VAR_DIR", tempfile.mkdtemp(prefix="mandate-test-"))

from governance.settings import *  # noqa: E402,F403
from governance.settings import DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a Celery worker started by a test sees the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

# Test receivers listen on 127.0.0.1 (SSRF tests turn this off explicitly).
MANDATE_WEBHOOK_ALLOW_PRIVATE = True
# The gate's test targets listen on 127.0.0.1 too (egress refusal tests turn this off).
MANDATE_EGRESS_ALLOW_PRIVATE = True

# Tests change the gate's configuration and read it back at once; in a rolled-back test the
# state row moves back, so every read compares stamps.
MANDATE_GATE_CONFIG_RECHECK_SECONDS = 0
# Tests call operator endpoints faster than an operator would (the limit has its own test).
MANDATE_GATE_OPERATOR_WRITE_RATE = 100000.0
MANDATE_GATE_OPERATOR_READ_RATE = 100000.0
