"""``manage.py verify_packet FILE [--jwks FILE_OR_URL]``: check a signed evidence packet.

Prints ``VALID`` or ``INVALID: <reason>``; exits 1 when the packet is invalid and 2 when
the packet or the JWKS cannot be read.
"""

import json
import sys
import urllib.request
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from envelopes.services.packets import verify_packet

JWKS_TIMEOUT_SECONDS = 10


def _read_json(source: str, what: str):
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=JWKS_TIMEOUT_SECONDS) as response:  # noqa: S310 - scheme checked
                text = response.read().decode("utf-8")
        else:
            text = Path(source).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the {what} from {source}: {exc}", returncode=2) from exc


class Command(BaseCommand):
    help = (
        "Verify an evidence packet (GET /v1/evidence/envelopes/{id}/packet): its Ed25519 signature, every audit "
        "event hash and chain link, and its integrity section. Exit code 1 when invalid."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The packet JSON file ('-' reads standard input).")
        parser.add_argument(
            "--jwks",
            help="A JWKS JSON file or URL (e.g. http://127.0.0.1:8080/.well-known/jwks.json); "
            "without it the key is looked up by kid in this platform's database.",
        )

    def handle(self, *args, file, jwks=None, **options):
        packet = _read_json(file, "packet")
        key_set = _read_json(jwks, "JWKS") if jwks else None
        verdict = verify_packet(packet, key_set)
        if not verdict.valid:
            self.stdout.write(f"INVALID: {verdict.reason}")
            raise SystemExit(1)
        self.stdout.write(f"VALID: {verdict.reason}")
