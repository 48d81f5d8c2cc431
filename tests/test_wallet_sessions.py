"""Wallet sessions: Sign-In with Ethereum (EIP-4361) over HTTP, with keys made here."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.test import APIClient

from governance.models import SiweNonce, WalletSession
from governance.secret_hashing import hash_secret
from governance.services.wallet_sessions import issue_nonce, revoke_wallet_session, revoke_wallet_sessions
from governance.siwe import BadChecksum, MalformedMessage, SiweMessage, format_message

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.probe_urls")]

DOMAIN = "mandate.example"
NONCE_URL = "/governance/auth/nonce"
VERIFY_URL = "/governance/auth/verify"


@pytest.fixture(autouse=True)
def _our_domain(settings):
    settings.PUBLIC_BASE_URL = f"https://{DOMAIN}"
    settings.MANDATE_SIWE_DOMAIN = ""
    settings.MANDATE_SIWE_CHAIN_IDS = [1]
    settings.MANDATE_WEB3_RPC_URL = ""


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def wallet():
    return Account.create()


def new_nonce(client) -> str:
    answer = client.get(NONCE_URL)
    assert answer.status_code == 200, answer.content
    return answer.json()["nonce"]


def sign_in_message(account, nonce, **fields) -> str:
    values = {
        "domain": DOMAIN,
        "address": account.address,
        "statement": "Sign in to Mandate.",
        "uri": f"https://{DOMAIN}/login",
        "chain_id": 1,
        "nonce": nonce,
        "issued_at": timezone.now(),
    }
    values.update(fields)
    return format_message(**values)


def sign(account, message: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()


def verify(client, message, signature):
    return client.post(VERIFY_URL, {"message": message, "signature": signature}, format="json")


def assert_refused(answer, status: int, code: str):
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert body["error"] == code and body["code"] == code, body
    assert body["correlation_id"].startswith("req_")
    assert answer["X-Correlation-ID"] == body["correlation_id"]


# --- the happy path ---------------------------------------------------------


def test_nonce_is_long_alphanumeric_short_lived_and_stored_only_hashed(client):
    answer = client.get(NONCE_URL)
    body = answer.json()
    assert answer.status_code == 200 and answer["X-Correlation-ID"].startswith("req_")
    assert len(body["nonce"]) >= 16 and body["nonce"].isalnum() and body["nonce"].isascii()
    stored = SiweNonce.objects.get()
    assert stored.nonce_hash == hash_secret(body["nonce"])
    assert body["nonce"] not in stored.nonce_hash
    assert timedelta(minutes=4) < stored.expires_at - timezone.now() <= timedelta(minutes=5)
    assert new_nonce(client) != body["nonce"]


def test_signed_message_opens_a_wallet_session_that_authenticates(client, wallet):
    message = sign_in_message(wallet, new_nonce(client))
    answer = verify(client, message, sign(wallet, message))
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["wallet"] == wallet.address
    assert body["wallet_session"].startswith("mws_")
    session = WalletSession.objects.get()
    assert session.wallet == wallet.address and session.chain_id == 1 and not session.contract_wallet
    assert session.secret_hash == hash_secret(body["wallet_session"])
    assert body["expires_at"].endswith("Z")

    probe = APIClient()
    probe.credentials(HTTP_AUTHORIZATION=f"Bearer {body['wallet_session']}")
    seen = probe.get("/v1/probe/wallet")
    assert seen.status_code == 200, seen.content
    assert seen.json() == {"principal": wallet.address, "kind": "wallet"}


def test_message_without_statement_and_with_every_optional_field_verifies(client, wallet):
    now = timezone.now()
    message = sign_in_message(
        wallet,
        new_nonce(client),
        statement=None,
        expiration_time=now + timedelta(minutes=10),
        not_before=now - timedelta(seconds=5),
        request_id="launcher-7f6f3a9b",
        resources=("ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/", "https://example.com/x"),
    )
    answer = verify(client, message, sign(wallet, message))
    assert answer.status_code == 200, answer.content
    # The session ends no later than the message does.
    assert WalletSession.objects.get().expires_at <= now + timedelta(minutes=10)


def test_all_lowercase_address_verifies_as_the_checksummed_wallet(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), address=wallet.address.lower())
    answer = verify(client, message, sign(wallet, message))
    assert answer.status_code == 200, answer.content
    assert answer.json()["wallet"] == wallet.address


def test_domain_setting_overrides_public_base_url(client, wallet, settings):
    settings.MANDATE_SIWE_DOMAIN = "launcher.example:8443"
    message = sign_in_message(
        wallet, new_nonce(client), domain="launcher.example:8443", uri="https://launcher.example:8443/"
    )
    assert verify(client, message, sign(wallet, message)).status_code == 200


# --- refusals -------------------------------------------------------------------


def test_domain_and_uri_host_compare_case_insensitively(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), domain="Mandate.EXAMPLE", uri="https://MANDATE.example/x")
    assert verify(client, message, sign(wallet, message)).status_code == 200


def test_wrong_domain_is_401_domain_mismatch_and_keeps_the_nonce(client, wallet):
    nonce = new_nonce(client)
    message = sign_in_message(wallet, nonce, domain="evil.example", uri="https://evil.example/login")
    assert_refused(verify(client, message, sign(wallet, message)), 401, "domain_mismatch")
    # A failed sign-in does not spend the nonce.
    good = sign_in_message(wallet, nonce)
    assert verify(client, good, sign(wallet, good)).status_code == 200


def test_uri_on_another_host_is_401_uri_mismatch(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), uri="https://evil.example/login")
    assert_refused(verify(client, message, sign(wallet, message)), 401, "uri_mismatch")


def test_wrong_scheme_before_the_domain_is_401_domain_mismatch(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), scheme="http")
    assert_refused(verify(client, message, sign(wallet, message)), 401, "domain_mismatch")


def test_chain_outside_the_allowed_list_is_401_chain_not_allowed(client, wallet, settings):
    message = sign_in_message(wallet, new_nonce(client), chain_id=137)
    assert_refused(verify(client, message, sign(wallet, message)), 401, "chain_not_allowed")
    settings.MANDATE_SIWE_CHAIN_IDS = [1, 137]
    assert verify(client, message, sign(wallet, message)).status_code == 200


def test_nonce_never_issued_is_401_nonce_unknown(client, wallet):
    message = sign_in_message(wallet, "NeverIssuedByMandate123")
    assert_refused(verify(client, message, sign(wallet, message)), 401, "nonce_unknown")


def test_used_nonce_is_409_nonce_used(client, wallet):
    message = sign_in_message(wallet, new_nonce(client))
    signature = sign(wallet, message)
    assert verify(client, message, signature).status_code == 200
    assert_refused(verify(client, message, signature), 409, "nonce_used")
    assert WalletSession.objects.count() == 1


def test_expired_nonce_is_401_nonce_expired(client, wallet):
    nonce = new_nonce(client)
    SiweNonce.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    message = sign_in_message(wallet, nonce)
    assert_refused(verify(client, message, sign(wallet, message)), 401, "nonce_expired")


def test_nonce_lifetime_is_a_setting(client, settings):
    settings.MANDATE_SIWE_NONCE_TTL_SECONDS = 30
    issued = issue_nonce()
    assert issued.expires_at - timezone.now() <= timedelta(seconds=30)


def test_beat_purges_expired_nonces_and_keeps_live_ones(client):
    from governance.tasks import purge_siwe_nonces_task

    live = new_nonce(client)
    new_nonce(client)
    SiweNonce.objects.exclude(nonce_hash=hash_secret(live)).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert purge_siwe_nonces_task() == 1
    assert list(SiweNonce.objects.values_list("nonce_hash", flat=True)) == [hash_secret(live)]


def test_the_beat_schedule_runs_the_nonce_purge_and_workers_know_it(settings):
    from governance.celery import app

    assert [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "governance.purge_siwe_nonces"]
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert "governance.purge_siwe_nonces" in app.tasks


def test_expired_message_is_401_message_expired(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), expiration_time=timezone.now() - timedelta(seconds=1))
    assert_refused(verify(client, message, sign(wallet, message)), 401, "message_expired")


def test_not_before_in_the_future_is_401_message_not_yet_valid(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), not_before=timezone.now() + timedelta(minutes=10))
    assert_refused(verify(client, message, sign(wallet, message)), 401, "message_not_yet_valid")


def test_issued_at_in_the_future_is_401_issued_in_future(client, wallet):
    message = sign_in_message(wallet, new_nonce(client), issued_at=timezone.now() + timedelta(minutes=10))
    assert_refused(verify(client, message, sign(wallet, message)), 401, "issued_in_future")


def test_signature_over_another_text_is_401_signature_invalid(client, wallet):
    message = sign_in_message(wallet, new_nonce(client))
    assert_refused(verify(client, message, sign(wallet, message + " ")), 401, "signature_invalid")


def test_garbage_signature_of_the_right_length_is_401_signature_invalid(client, wallet):
    message = sign_in_message(wallet, new_nonce(client))
    assert_refused(verify(client, message, "0x" + "ff" * 65), 401, "signature_invalid")


def test_signer_other_than_the_address_is_401_signature_invalid(client, wallet):
    intruder = Account.create()
    message = sign_in_message(wallet, new_nonce(client))
    assert_refused(verify(client, message, sign(intruder, message)), 401, "signature_invalid")
    assert not WalletSession.objects.exists()


@pytest.mark.parametrize("signature", ["", "deadbeef", "0x", "0xabc", "0xzz" + "00" * 64, "0x" + "00" * 5000])
def test_malformed_signature_is_400_signature_malformed(client, wallet, signature):
    message = sign_in_message(wallet, new_nonce(client))
    answer = verify(client, message, signature)
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] in {"signature_malformed", "invalid_request"}


def test_mixed_case_address_with_a_wrong_checksum_is_400_address_checksum_invalid(client, wallet):
    address = wallet.address
    flipped = next(i for i in range(2, 42) if address[i].isalpha())
    broken = address[:flipped] + address[flipped].swapcase() + address[flipped + 1 :]
    message = sign_in_message(wallet, new_nonce(client), address=broken)
    assert_refused(verify(client, message, sign(wallet, message)), 400, "address_checksum_invalid")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda m: m.replace("Version: 1", "Version: 2"),
        lambda m: m.replace(" wants you to sign in", " want you to sign in"),
        lambda m: m.replace("\n\nURI:", "\nURI:"),  # the blank line before URI is required
        lambda m: m.replace("URI: https://", "URI: https ://"),
        lambda m: m.replace("Chain ID: 1", "Chain ID: one"),
        lambda m: m.replace("Nonce: ", "Nonce: ab!"),
        lambda m: m.replace("Issued At: ", "Issued At: yesterday "),
        lambda m: m.replace("Sign in to Mandate.", "Sign in\rto Mandate."),
        lambda m: m.replace("Sign in to Mandate.", "Sign in to Mandaté."),
        lambda m: m + "\n",
        lambda m: m + "\nExtra: field",
        lambda m: m.replace("\n", "\r\n"),
        lambda m: "",
    ],
)
def test_malformed_message_is_400_message_malformed(client, wallet, mangle):
    message = mangle(sign_in_message(wallet, new_nonce(client)))
    answer = verify(client, message, sign(wallet, message) if message else "0x" + "00" * 65)
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] in {"message_malformed", "invalid_request"}, answer.json()


def test_far_future_issued_at_parses_and_is_refused_as_future(client, wallet):
    message = sign_in_message(wallet, new_nonce(client)).replace("Issued At: 2", "Issued At: 9")
    assert_refused(verify(client, message, sign(wallet, message)), 401, "issued_in_future")


@pytest.mark.parametrize(
    "body",
    [{}, {"message": "x"}, {"signature": "0x00"}, {"message": 5, "signature": "0x00"}, ["message"]],
)
def test_body_without_message_and_signature_is_400_invalid_request(client, body):
    assert_refused(client.post(VERIFY_URL, json.dumps(body), content_type="application/json"), 400, "invalid_request")


def test_body_that_is_not_json_is_400_invalid_request(client):
    assert_refused(client.post(VERIFY_URL, "{not json", content_type="application/json"), 400, "invalid_request")


# --- the message grammar directly ----------------------------------------------


def test_parser_reads_every_field(wallet):
    now = timezone.now().replace(microsecond=123000)
    text = format_message(
        scheme="https",
        domain="user@[::1]:8080",
        address=wallet.address,
        statement="I accept the ServiceOrg Terms of Service: https://service.org/tos",
        uri="https://[::1]:8080/login?x=1#frag",
        chain_id=5,
        nonce="32891756abcd",
        issued_at=now,
        expiration_time=now + timedelta(days=1),
        not_before=now,
        request_id="some%20id",
        resources=("https://a.example/1", "urn:x:y"),
    )
    message = SiweMessage.parse(text)
    assert message.scheme == "https" and message.domain == "user@[::1]:8080"
    assert message.address == wallet.address and message.chain_id == 5 and message.nonce == "32891756abcd"
    assert message.statement.startswith("I accept") and message.request_id == "some%20id"
    assert message.issued_at == now and message.resources == ("https://a.example/1", "urn:x:y")
    assert message.uri_authority == "[::1]:8080"


def test_parser_takes_the_spec_example_with_offsets_and_long_fractions():
    text = (
        "service.org wants you to sign in with your Ethereum account:\n"
        "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n"
        "I accept the ServiceOrg Terms of Service: https://service.org/tos\n\n"
        "URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\n"
        "Issued At: 2021-09-30T16:25:24.123456789+02:00\n"
        "Resources:\n- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
        "- https://example.com/my-web2-claim.json"
    )
    message = SiweMessage.parse(text)
    assert message.issued_at.isoformat() == "2021-09-30T14:25:24.123456+00:00"
    assert len(message.resources) == 2


def test_parser_refuses_a_leap_second_and_an_impossible_date():
    base = (
        "service.org wants you to sign in with your Ethereum account:\n"
        "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n\n"
        "URI: https://service.org/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\nIssued At: {}"
    )
    SiweMessage.parse(base.format("2021-09-30T16:25:24Z"))
    for stamp in ("2021-09-30T16:25:60Z", "2021-02-30T16:25:24Z", "2021-09-30T16:25:24+25:00"):
        with pytest.raises(MalformedMessage):
            SiweMessage.parse(base.format(stamp))
    with pytest.raises(BadChecksum):
        SiweMessage.parse(base.format("2021-09-30T16:25:24Z").replace("0xC02aaA", "0xc02aaA"))


def test_parser_takes_a_hostile_long_line_quickly():
    import time

    started = time.perf_counter()
    with pytest.raises(MalformedMessage):
        SiweMessage.parse("a" * 16000 + " wants you to sign in")
    with pytest.raises(MalformedMessage):
        SiweMessage.parse("x" * 17000)
    head = "d.example wants you to sign in with your Ethereum account:\n" + "0x" + "ab" * 20 + "\n\n\nURI: "
    tail = "\nVersion: 1\nChain ID: 1\nNonce: 32891756\nIssued At: 2021-09-30T16:25:24Z"
    for uri in ("a://" + "u" * 15000 + "@@", "a://" + "%aa" * 4900 + "%", "a:" + ":" * 15000 + " "):
        with pytest.raises(MalformedMessage):
            SiweMessage.parse(head + uri + tail)
    assert time.perf_counter() - started < 1


# --- sessions ---------------------------------------------------------------------


@pytest.fixture
def signed_in(client, wallet):
    message = sign_in_message(wallet, new_nonce(client))
    body = verify(client, message, sign(wallet, message)).json()
    probe = APIClient()
    probe.credentials(HTTP_AUTHORIZATION=f"Bearer {body['wallet_session']}")
    return probe, WalletSession.objects.get(prefix=body["wallet_session"].split("_")[1])


def test_revoked_session_stops_authenticating(signed_in):
    probe, session = signed_in
    assert probe.get("/v1/probe/wallet").status_code == 200
    revoke_wallet_session(session)
    answer = probe.get("/v1/probe/wallet")
    assert_refused(answer, 401, "wallet_session_invalid")
    assert answer["WWW-Authenticate"].startswith("Bearer")


def test_revoking_a_wallet_revokes_all_its_sessions(signed_in, wallet):
    probe, _ = signed_in
    assert revoke_wallet_sessions(wallet.address.lower()) == 1
    assert probe.get("/v1/probe/wallet").status_code == 401


def test_expired_session_stops_authenticating(signed_in):
    probe, session = signed_in
    WalletSession.objects.filter(pk=session.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_refused(probe.get("/v1/probe/wallet"), 401, "wallet_session_invalid")


def test_tampered_session_secret_is_refused(signed_in):
    probe, session = signed_in
    probe.credentials(HTTP_AUTHORIZATION=f"Bearer mws_{session.prefix}_forged")
    assert_refused(probe.get("/v1/probe/wallet"), 401, "wallet_session_invalid")


def test_wallet_session_is_not_a_credential_on_ordinary_views(signed_in):
    probe, _ = signed_in
    assert probe.get("/v1/probe/echo").status_code == 401


def test_api_token_is_not_accepted_where_only_wallet_sessions_are(make_token):
    probe = APIClient()
    probe.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token('platform.viewer')}")
    assert probe.get("/v1/probe/wallet").status_code == 401


def test_admin_revoke_action_revokes_the_session(signed_in, admin_client):
    probe, session = signed_in
    answer = admin_client.post(
        "/admin/governance/walletsession/",
        {"action": "revoke", "_selected_action": [str(session.pk)]},
    )
    assert answer.status_code == 302, answer.content[:500]
    session.refresh_from_db()
    assert session.status == "revoked" and session.revoked_at is not None
    assert probe.get("/v1/probe/wallet").status_code == 401
    listing = admin_client.get("/admin/governance/walletsession/")
    assert listing.status_code == 200 and session.wallet.encode() in listing.content
    assert admin_client.get("/admin/governance/walletsession/add/").status_code == 403


# --- contract wallets (EIP-1271): a real contract on web3's tester chain, over HTTP ---------


def owner_checking_wallet(owner: str) -> bytes:
    """Init code of a minimal EIP-1271 wallet (hand-assembled EVM): ``isValidSignature(hash,
    sig)`` ecrecovers the 65-byte ``sig`` over ``hash`` and answers the magic value when the
    signer is ``owner``, else 0xffffffff."""
    runtime = bytes.fromhex(
        "600435600052"  # mem[0x00] = hash
        "60a43560f81c602052"  # mem[0x20] = v, the signature's 65th byte
        "606435604052"  # mem[0x40] = r
        "608435606052"  # mem[0x60] = s
        "602060806080600060015afa50"  # staticcall ecrecover(mem[0:0x80]) -> mem[0x80]
        "608051" + "73" + owner[2:] + "14"  # mem[0x80] == owner
    )
    refuse = bytes.fromhex("63ffffffff60e01b60005260206000f3")
    accept = bytes.fromhex("5b631626ba7e60e01b60005260206000f3")
    runtime += bytes([0x60, len(runtime) + 3 + len(refuse), 0x57]) + refuse + accept
    return bytes([0x60, len(runtime), 0x80, 0x60, 0x0B, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3]) + runtime


class LocalChainRPC:
    """web3's in-memory tester chain (py-evm) served as JSON-RPC on 127.0.0.1, as a node
    would serve it; records the methods called."""

    def __init__(self):
        from web3 import EthereumTesterProvider, Web3

        self.provider = EthereumTesterProvider()
        self.web3 = Web3(self.provider)
        self.methods: list[str] = []
        self.lock = threading.Lock()
        rpc = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                params = request.get("params", [])
                if request["method"] == "eth_call":  # eth-tester wants a sender; nodes do not
                    params[0].setdefault("from", rpc.web3.eth.accounts[0])
                with rpc.lock:
                    rpc.methods.append(request["method"])
                    try:
                        answer = rpc.provider.make_request(request["method"], params)
                    except Exception as exc:
                        answer = {"error": {"code": -32000, "message": str(exc)}}
                answer = {"jsonrpc": "2.0", "id": request["id"], **answer}
                body = json.dumps(answer, default=lambda value: "0x" + bytes(value).hex()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def deploy_wallet(self, owner: str) -> str:
        transaction = self.web3.eth.send_transaction(
            {"from": self.web3.eth.accounts[0], "data": owner_checking_wallet(owner)}
        )
        return self.web3.eth.get_transaction_receipt(transaction)["contractAddress"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chain(settings):
    rpc = LocalChainRPC()
    settings.MANDATE_WEB3_RPC_URL = rpc.url
    yield rpc
    rpc.close()


def test_contract_wallet_whose_owner_signed_opens_a_session(client, chain):
    owner = Account.create()
    contract = chain.deploy_wallet(owner.address)
    message = sign_in_message(owner, new_nonce(client), address=contract)
    answer = verify(client, message, sign(owner, message))  # recovers to the owner, not the wallet
    assert answer.status_code == 200, answer.content
    assert answer.json()["wallet"] == contract
    assert WalletSession.objects.get().contract_wallet
    assert "eth_call" in chain.methods


def test_contract_wallet_refusing_the_signature_is_401_signature_invalid(client, chain):
    contract = chain.deploy_wallet(Account.create().address)
    stranger = Account.create()
    message = sign_in_message(stranger, new_nonce(client), address=contract)
    assert_refused(verify(client, message, sign(stranger, message)), 401, "signature_invalid")
    assert not WalletSession.objects.exists()


def test_address_without_code_is_not_asked_and_is_401_signature_invalid(client, chain):
    message = sign_in_message(Account.create(), new_nonce(client))
    assert_refused(verify(client, message, "0x" + "ab" * 130), 401, "signature_invalid")
    assert "eth_getCode" in chain.methods and "eth_call" not in chain.methods


def test_contract_wallet_with_an_unusable_nonce_makes_no_rpc_call(client, chain):
    contract = chain.deploy_wallet(Account.create().address)
    chain.methods.clear()
    message = sign_in_message(Account.create(), "NeverIssuedByMandate123", address=contract)
    assert_refused(verify(client, message, "0x" + "ab" * 130), 401, "nonce_unknown")
    assert chain.methods == []


def test_unreachable_rpc_is_503_wallet_rpc_unavailable(client, settings):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.MANDATE_WEB3_RPC_URL = f"http://127.0.0.1:{port}"
    message = sign_in_message(Account.create(), new_nonce(client), address=CONTRACT)
    assert_refused(verify(client, message, "0x" + "ab" * 130), 503, "wallet_rpc_unavailable")


CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_without_rpc_a_contract_signature_is_401_signature_invalid(client):
    message = sign_in_message(Account.create(), new_nonce(client), address=CONTRACT)
    assert_refused(verify(client, message, "0x" + "ab" * 130), 401, "signature_invalid")


# --- one nonce, many parallel sign-ins, two server processes on PostgreSQL ----------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_sign_ins_with_one_nonce_open_exactly_one_session():
    import asyncio

    import httpx

    from tests.faults import database_url_named, server

    nonce = issue_nonce().nonce
    wallets = [Account.create() for _ in range(12)]
    bodies = []
    for account in wallets:  # every wallet signs its own message around the same nonce
        message = sign_in_message(account, nonce)
        bodies.append({"message": message, "signature": sign(account, message)})

    env = {"PUBLIC_BASE_URL": f"https://{DOMAIN}", "MANDATE_SIWE_DOMAIN": ""}
    with (
        server(database_url_named("siwe-a"), **env) as first,
        server(database_url_named("siwe-b"), **env) as second,
    ):

        async def scenario():
            clients = [httpx.AsyncClient(base_url=s.url, timeout=60) for s in (first, second)]
            try:
                posts = [clients[n % 2].post(VERIFY_URL, json=body) for n, body in enumerate(bodies)]
                return await asyncio.gather(*posts)
            finally:
                for one in clients:
                    await one.aclose()

        answers = asyncio.run(scenario())

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [409] * 11, [answer.content for answer in answers]
    assert {answer.json()["code"] for answer in answers if answer.status_code == 409} == {"nonce_used"}
    winner = next(answer.json() for answer in answers if answer.status_code == 200)
    assert list(WalletSession.objects.values_list("wallet", flat=True)) == [winner["wallet"]]
    assert SiweNonce.objects.get().used_at is not None
