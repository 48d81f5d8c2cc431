"""A small world for the gate's end-to-end tests: a local HTTP target, a catalogue with
actions that reach it (a low-risk fetch, a high-risk delete that is held), an agent granted
them, and leases for it."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from controlplane.gate import acl, audit
from controlplane.gate.registry import reload
from governance.choices import Role
from tests import gate_client
from tests.gate_actions import copy_actions, read_manifest, write_manifest

AGENT = "agent-payments-prod"


class Target(BaseHTTPRequestHandler):
    """Answers every method with JSON naming what it got."""

    seen: list = []

    def _answer(self, status=200):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        Target.seen.append((self.command, self.path, body))
        content = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(500 if self.path.startswith("/fail") else status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Target.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def local_actions(tmp_path):
    """The shipped catalogue plus ``local_fetch`` (low risk, 127.0.0.1 allowed) and
    ``local_delete`` (high risk: held for a person)."""
    directory = copy_actions(tmp_path)
    fetch = read_manifest("http_fetch.yaml")
    fetch.update(action_id="local_fetch", description="GET a local URL")
    fetch["egress"] = {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]}
    write_manifest(directory, "local_fetch.yaml", fetch)
    delete = read_manifest("http_delete.yaml")
    delete.update(action_id="local_delete", description="DELETE a local URL")
    delete["egress"] = {"profile": "proxy_allowlist", "allowed_domains": ["127.0.0.1"]}
    write_manifest(directory, "local_delete.yaml", delete)
    return directory


@pytest.fixture
def gate(tmp_path, client_with, settings):
    """The catalogue loaded, the agent granted, and ``lease()`` for it (an operator's token asks)."""
    directory = local_actions(tmp_path)
    settings.MANDATE_GATE_FS_ROOT = str(tmp_path / "fs")
    with override_settings(MANDATE_ACTIONS_DIR=directory):
        reload()
        acl.grant(
            AGENT, ["local_fetch", "local_delete", "http_fetch", "fs_read", "fs_write", "echo_wasm"], actor=audit.SYSTEM
        )
        operator = client_with(Role.PLATFORM_OPERATOR)

        class World:
            operator_client = operator

            @staticmethod
            def lease(**options):
                return gate_client.lease(operator, agent_id=AGENT, **options)

        yield World


def refuse_receipts(monkeypatch) -> None:
    """From now on the database refuses every execution's receipt (a NOT NULL column left
    empty), so its evidence cannot be written; a refusal's ledger event stores no receipt and
    is still written."""
    from envelopes.gate.steps import recording

    prepare = recording.execution_evidence

    def unstorable(call, receipt_id):
        evidence = prepare(call, receipt_id)
        evidence.receipt.action_id = None
        return evidence

    monkeypatch.setattr(recording, "execution_evidence", unstorable)
