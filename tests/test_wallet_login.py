"""Signing in to the console with a linked wallet, linking and unlinking wallets: through the
services (the rules) and over HTTP (the browser's endpoints)."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from evidence.models import AdminAuditRecord
from governance.choices import Role
from governance.errors import Invalid, NotFound
from governance.models import AccountWallet, Person, SiweNonce, WalletSession
from governance.secret_hashing import hash_secret
from governance.services.people import create_person, ensure_organization
from governance.services.wallet_login import link_wallet, sign_in_with_wallet, unlink_wallet
from governance.services.wallet_sessions import SignInRefused, issue_nonce
from tests.siwe_wallets import LINK_PATH, console_message, new_wallet, sign

pytestmark = pytest.mark.django_db

DOMAIN = "mandate.example"
PASSWORD = "a-Long-enough-passw0rd"
LOGIN_URL = "/auth/wallet/login"
LINK_URL = "/auth/wallet/link"
UNLINK_URL = "/auth/wallet/unlink"


@pytest.fixture(autouse=True)
def _our_domain(settings):
    settings.PUBLIC_BASE_URL = f"https://{DOMAIN}"
    settings.MANDATE_SIWE_DOMAIN = ""
    settings.MANDATE_SIWE_CHAIN_IDS = [1]
    settings.MANDATE_WEB3_RPC_URL = ""


@pytest.fixture(autouse=True)
def _private_rate_limits(settings):
    """allauth counts sign-ins in the cache: each test gets its own (never flush a shared Redis)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }


@pytest.fixture
def wallet():
    return new_wallet()


@pytest.fixture
def dana(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="dana", password=PASSWORD)


@pytest.fixture
def linked(dana, wallet):
    return AccountWallet.objects.create(person=dana, address=wallet.address)


def signed(account, *, path="/accounts/login/", nonce=None, **fields) -> tuple[str, str]:
    message = console_message(account, nonce or issue_nonce().nonce, domain=DOMAIN, path=path, **fields)
    return message, sign(account, message)


def nonce_used(message: str) -> bool:
    nonce = message.split("Nonce: ")[1].split("\n")[0]
    return SiweNonce.objects.get(nonce_hash=hash_secret(nonce)).used_at is not None


def audit(action: str) -> list[AdminAuditRecord]:
    return list(AdminAuditRecord.objects.filter(action=action).order_by("occurred_at"))


# --- services: signing in ----------------------------------------------------------------


def test_linked_wallet_signs_its_person_in_and_the_sign_in_is_audited(linked, dana, wallet):
    message, signature = signed(wallet)
    assert sign_in_with_wallet(message, signature, request_id="req-1", client_ip="192.0.2.7") == dana
    assert nonce_used(message)
    assert not WalletSession.objects.exists()  # a console sign-in is no launcher's bearer session
    [record] = audit("wallet.signed_in")
    assert (record.outcome, record.actor_type, record.actor_id) == ("success", "user", str(dana.pk))
    assert (record.target_type, record.target_id) == ("wallet", wallet.address)
    assert (record.request_id, record.client_ip, record.organization_id) == ("req-1", "192.0.2.7", dana.organization_id)
    assert record.details == {"chain_id": 1, "contract_wallet": False}


def test_unlinked_wallet_is_refused_spends_its_nonce_and_leaves_a_failure_record(wallet):
    message, signature = signed(wallet)
    with pytest.raises(SignInRefused) as refused:
        sign_in_with_wallet(message, signature)
    assert refused.value.code == "wallet_not_linked"
    assert nonce_used(message)
    [record] = audit("wallet.signed_in")
    assert (record.outcome, record.actor_type, record.actor_id) == ("failure", "wallet", wallet.address)
    assert record.details["reason"] == "wallet_not_linked"


def test_deactivated_persons_wallet_is_refused(linked, dana, wallet):
    Person.objects.filter(pk=dana.pk).update(is_active=False)
    with pytest.raises(SignInRefused) as refused:
        sign_in_with_wallet(*signed(wallet))
    assert refused.value.code == "account_inactive"
    assert audit("wallet.signed_in")[0].outcome == "failure"


def test_a_nonce_signs_in_once(linked, wallet):
    message, signature = signed(wallet)
    sign_in_with_wallet(message, signature)
    with pytest.raises(SignInRefused) as refused:
        sign_in_with_wallet(message, signature)
    assert refused.value.code == "nonce_used"


def test_a_launchers_message_or_a_link_message_does_not_sign_in_and_keeps_its_nonce(linked, wallet):
    for path in ("/login", LINK_PATH):
        message, signature = signed(wallet, path=path)
        with pytest.raises(SignInRefused) as refused:
            sign_in_with_wallet(message, signature)
        assert refused.value.code == "uri_mismatch"
        assert not nonce_used(message)


def test_a_signature_by_another_key_is_refused_and_keeps_the_nonce(linked, wallet):
    message, _ = signed(wallet)
    with pytest.raises(SignInRefused) as refused:
        sign_in_with_wallet(message, sign(new_wallet(), message))
    assert refused.value.code == "signature_invalid"
    assert not nonce_used(message)
    assert not audit("wallet.signed_in")


# --- services: linking and unlinking -------------------------------------------------------


def test_linking_a_wallet_records_it_checksummed_and_audits_it(dana, wallet):
    message, signature = signed(wallet, path=LINK_PATH)
    link = link_wallet(dana, message, signature, request_id="req-2")
    assert link.created and link.wallet.person == dana and link.wallet.address == wallet.address
    assert nonce_used(message)
    [record] = audit("wallet.linked")
    assert (record.outcome, record.actor_id, record.target_id, record.request_id) == (
        "success",
        str(dana.pk),
        wallet.address,
        "req-2",
    )


def test_linking_the_same_wallet_again_changes_nothing(linked, dana, wallet):
    link = link_wallet(dana, *signed(wallet, path=LINK_PATH))
    assert not link.created and link.wallet == linked
    assert AccountWallet.objects.count() == 1 and not audit("wallet.linked")


def test_a_wallet_linked_to_someone_else_is_refused(linked, make_person, wallet):
    erin = make_person(username="erin")
    message, signature = signed(wallet, path=LINK_PATH)
    with pytest.raises(SignInRefused) as refused:
        link_wallet(erin, message, signature)
    assert refused.value.code == "wallet_linked_to_another_account"
    assert AccountWallet.objects.get().person == linked.person
    assert nonce_used(message)
    [record] = audit("wallet.linked")
    assert (record.outcome, record.actor_id, record.details["reason"]) == (
        "failure",
        str(erin.pk),
        "wallet_linked_to_another_account",
    )


def test_a_sign_in_message_does_not_link(dana, wallet):
    with pytest.raises(SignInRefused) as refused:
        link_wallet(dana, *signed(wallet))
    assert refused.value.code == "uri_mismatch"
    assert not AccountWallet.objects.exists()


def test_unlinking_removes_the_wallet_in_any_capitalization_and_audits_who_did_it(linked, dana, make_person, wallet):
    assert unlink_wallet(dana, wallet.address.lower()) == wallet.address
    assert not AccountWallet.objects.exists()
    AccountWallet.objects.create(person=dana, address=wallet.address)
    admin = make_person(roles=[Role.PLATFORM_ADMIN], username="root")
    unlink_wallet(dana, wallet.address, by=admin)
    mine, theirs = audit("wallet.unlinked")
    assert (mine.actor_id, mine.details) == (str(dana.pk), {})
    assert (theirs.actor_id, theirs.details) == (str(admin.pk), {"person": str(dana.pk)})


def test_unlinking_a_wallet_not_linked_to_this_person_or_not_an_address_is_refused(linked, make_person, wallet):
    with pytest.raises(NotFound):
        unlink_wallet(make_person(username="erin"), wallet.address)
    wrong_checksum = "0x742D35cC6634c0532925A3B844bC454E4438F44E"  # EIP-55's capitals swapped
    for hostile in ("0x12", "0x" + "g" * 40, 42, None, " " + wallet.address, wallet.address + "\n", wrong_checksum):
        with pytest.raises(Invalid):
            unlink_wallet(linked.person, hostile)
    assert AccountWallet.objects.count() == 1


# --- services: at the same time, on PostgreSQL ----------------------------------------------------


def at_once(calls) -> list:
    """Run the calls in parallel threads (each with its own connection), released together;
    each returns what its call returned, or the refusal's code."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        try:
            barrier.wait()
            return call()
        except SignInRefused as exc:
            return exc.code
        finally:
            connection.close()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_people_linking_one_wallet_at_once_link_it_to_exactly_one_of_them(wallet):
    organization = ensure_organization("acme", "Acme")
    people = [create_person(organization, f"p{n}") for n in range(6)]
    attempts = [(person, signed(wallet, path=LINK_PATH)) for person in people]
    results = at_once(
        [lambda person=person, sent=sent: link_wallet(person, *sent).created for person, sent in attempts]
    )
    assert sorted(map(str, results)) == ["True"] + ["wallet_linked_to_another_account"] * 5
    winner = people[results.index(True)]
    assert list(AccountWallet.objects.values_list("person", flat=True)) == [winner.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_signed_message_sent_many_times_at_once_signs_in_once(wallet):
    dana = create_person(ensure_organization("acme", "Acme"), "dana")
    AccountWallet.objects.create(person=dana, address=wallet.address)
    message, signature = signed(wallet)
    results = at_once([lambda: sign_in_with_wallet(message, signature).username] * 6)
    assert sorted(results) == ["dana"] + ["nonce_used"] * 5
    assert AdminAuditRecord.objects.filter(action="wallet.signed_in").count() == 1


# --- HTTP: POST /auth/wallet/login ---------------------------------------------------------------


def csrf_client() -> APIClient:
    """A browser's client: CSRF enforced, with the token the sign-in page sets."""
    client = APIClient(enforce_csrf_checks=True)
    assert client.get("/accounts/login/").status_code == 200
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


def post_login(client, message, signature, **extra):
    return client.post(LOGIN_URL, {"message": message, "signature": signature, **extra}, format="json")


def assert_refused(answer, status: int, code: str):
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert body["message"]


def test_sign_in_over_http_starts_a_session_and_says_where_to_go(linked, dana, wallet):
    client = csrf_client()
    answer = post_login(client, *signed(wallet))
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"redirect": "/admin/", "username": "dana"}
    assert client.get("/admin/").status_code == 200
    assert client.session["_auth_user_id"] == str(dana.pk)


def test_sign_in_goes_to_the_page_asked_for_on_this_site_only(linked, wallet):
    assert post_login(csrf_client(), *signed(wallet), next="/agents").json()["redirect"] == "/agents"
    for elsewhere in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        assert post_login(csrf_client(), *signed(wallet), next=elsewhere).json()["redirect"] == "/admin/"


def test_a_pending_password_change_comes_first(linked, dana, wallet):
    Person.objects.filter(pk=dana.pk).update(must_change_password=True)
    client = csrf_client()
    answer = post_login(client, *signed(wallet), next="/agents")
    assert answer.json()["redirect"] == "/accounts/password/change/?next=/agents"
    held_back = client.get("/admin/")
    assert held_back.status_code == 302 and held_back["Location"].startswith("/accounts/password/change/")


def test_unlinked_wallet_is_401_and_starts_no_session(wallet):
    client = csrf_client()
    assert_refused(post_login(client, *signed(wallet)), 401, "wallet_not_linked")
    assert "_auth_user_id" not in client.session


def test_reused_nonce_is_409(linked, wallet):
    message, signature = signed(wallet)
    assert post_login(csrf_client(), message, signature).status_code == 200
    assert_refused(post_login(csrf_client(), message, signature), 409, "nonce_used")


def test_message_for_another_domain_is_401(linked, wallet):
    message = console_message(wallet, issue_nonce().nonce, domain="evil.example")
    assert_refused(post_login(csrf_client(), message, sign(wallet, message)), 401, "domain_mismatch")


def test_deactivated_person_is_403(linked, dana, wallet):
    Person.objects.filter(pk=dana.pk).update(is_active=False)
    assert_refused(post_login(csrf_client(), *signed(wallet)), 403, "account_inactive")


def test_expired_message_and_unaccepted_chain_are_401_saying_why(linked, wallet):
    past = timezone.now() - timedelta(minutes=1)
    assert_refused(post_login(csrf_client(), *signed(wallet, expiration_time=past)), 401, "message_expired")
    answer = post_login(csrf_client(), *signed(wallet, chain_id=137))
    assert_refused(answer, 401, "chain_not_allowed")
    assert answer.json()["message"] == "Chain ID 137 is not accepted (accepted: 1)"


def test_sign_in_without_the_csrf_token_is_403(linked, wallet):
    client = APIClient(enforce_csrf_checks=True)
    answer = post_login(client, *signed(wallet))
    assert_refused(answer, 403, "csrf_failed")
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    "body",
    [
        {"message": 5, "signature": "0x00"},
        {"message": "x"},
        {"message": "x" * 16385, "signature": "0x00"},
        {"message": "x", "signature": "0x" + "00" * 4097},
        {"message": "x", "signature": "0x00", "next": ["/admin/"]},
        ["message"],
    ],
)
def test_malformed_bodies_are_400_invalid_request(body):
    assert_refused(csrf_client().post(LOGIN_URL, body, format="json"), 400, "invalid_request")


def test_malformed_message_and_signature_are_400(linked, wallet):
    message, signature = signed(wallet)
    assert_refused(post_login(csrf_client(), "hello", signature), 400, "message_malformed")
    assert_refused(post_login(csrf_client(), message, "not-hex"), 400, "signature_malformed")
    answer = csrf_client().post(LOGIN_URL, b"{not json", content_type="application/json")
    assert_refused(answer, 400, "invalid_request")
    answer = csrf_client().post(LOGIN_URL, b"message=x", content_type="application/x-www-form-urlencoded")
    assert_refused(answer, 415, "unsupported_media_type")


def test_oversized_body_is_413(linked):
    answer = csrf_client().post(LOGIN_URL, b'{"message": "' + b"x" * 70000 + b'"}', content_type="application/json")
    assert answer.status_code == 413


def test_sign_in_attempts_share_the_password_sign_ins_rate_limit(settings, linked, wallet):
    settings.ACCOUNT_RATE_LIMITS = {"login": "2/m/ip"}
    assert post_login(csrf_client(), *signed(wallet)).status_code == 200
    assert_refused(post_login(csrf_client(), "hello", "0x00"), 400, "message_malformed")
    assert_refused(post_login(csrf_client(), *signed(wallet)), 429, "too_many_attempts")


def test_only_post_is_allowed(linked):
    assert_refused(csrf_client().get(LOGIN_URL), 405, "method_not_allowed")


# --- HTTP: link and unlink ------------------------------------------------------------------------


def signed_in_client(person) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(person)
    client.get("/accounts/wallet/")  # the wallets page sets the CSRF cookie
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


def post_link(client, message, signature):
    return client.post(LINK_URL, {"message": message, "signature": signature}, format="json")


def test_signed_in_person_links_a_wallet_then_signs_in_with_it(dana, wallet):
    answer = post_link(signed_in_client(dana), *signed(wallet, path=LINK_PATH))
    assert answer.status_code == 201, answer.content
    assert answer.json()["wallet"] == wallet.address and answer.json()["linked_at"].endswith("Z")
    assert AccountWallet.objects.get().person == dana
    assert post_login(csrf_client(), *signed(wallet)).json()["username"] == "dana"


def test_linking_again_is_200(linked, dana, wallet):
    answer = post_link(signed_in_client(dana), *signed(wallet, path=LINK_PATH))
    assert answer.status_code == 200 and answer.json()["wallet"] == wallet.address


def test_linking_someone_elses_wallet_is_409(linked, make_person, wallet):
    erin = make_person(username="erin")
    assert_refused(
        post_link(signed_in_client(erin), *signed(wallet, path=LINK_PATH)), 409, "wallet_linked_to_another_account"
    )


def test_linking_needs_a_signed_in_person_and_the_csrf_token(dana, wallet):
    assert_refused(post_link(APIClient(), *signed(wallet, path=LINK_PATH)), 401, "not_signed_in")
    without_token = APIClient(enforce_csrf_checks=True)
    without_token.force_login(dana)
    assert_refused(post_link(without_token, *signed(wallet, path=LINK_PATH)), 403, "csrf_failed")
    assert not AccountWallet.objects.exists()


def test_linking_with_a_reused_nonce_is_409(dana, wallet):
    message, signature = signed(wallet, path=LINK_PATH)
    client = signed_in_client(dana)
    assert post_link(client, message, signature).status_code == 201
    AccountWallet.objects.all().delete()
    assert_refused(post_link(client, message, signature), 409, "nonce_used")


def test_unlinking_over_http(linked, dana, make_person, wallet):
    client = signed_in_client(dana)
    assert_refused(client.post(UNLINK_URL, {"wallet": "0x12"}, format="json"), 400, "invalid_request")
    assert_refused(client.post(UNLINK_URL, {}, format="json"), 400, "invalid_request")
    erin = signed_in_client(make_person(username="erin"))
    assert_refused(erin.post(UNLINK_URL, {"wallet": wallet.address}, format="json"), 404, "wallet_not_linked")
    answer = client.post(UNLINK_URL, {"wallet": wallet.address.lower()}, format="json")
    assert answer.status_code == 200 and answer.json() == {"unlinked": wallet.address}
    assert not AccountWallet.objects.exists()
    assert_refused(client.post(UNLINK_URL, {"wallet": wallet.address}, format="json"), 404, "wallet_not_linked")
    assert_refused(APIClient().post(UNLINK_URL, {"wallet": wallet.address}, format="json"), 401, "not_signed_in")


# --- pages ------------------------------------------------------------------------------------------


def test_sign_in_page_offers_sign_in_with_ethereum_with_what_the_script_needs(client):
    html = client.get("/accounts/login/?next=/agents").content.decode()
    assert "Sign in with Ethereum" in html
    assert 'data-post-url="/auth/wallet/login"' in html and 'data-nonce-url="/governance/auth/nonce"' in html
    assert 'data-uri-path="/accounts/login/"' in html and 'data-next="/agents"' in html
    assert 'data-chain-ids="1"' in html and "/static/mandate/wallet.js" in html


def test_wallets_page_lists_the_persons_wallets_and_needs_a_sign_in(client, linked, dana, make_person, wallet):
    other = AccountWallet.objects.create(person=make_person(username="erin"), address=new_wallet().address)
    assert client.get("/accounts/wallet/")["Location"] == "/accounts/login/?next=/accounts/wallet/"
    client.force_login(dana)
    html = client.get("/accounts/wallet/").content.decode()
    assert wallet.address in html and other.address not in html
    assert "Link wallet" in html and 'data-uri-path="/accounts/wallet/"' in html
    assert 'href="/accounts/wallet/"' in client.get("/admin/").content.decode()  # "Wallets" in the user tools


def test_admin_lists_linked_wallets_and_unlinks_them_with_an_audit_record(client, linked, dana, make_person):
    admin = make_person(roles=[Role.PLATFORM_ADMIN], username="root", is_superuser=True)
    client.force_login(admin)
    changelist = "/admin/governance/accountwallet/"
    assert linked.address in client.get(changelist).content.decode()
    assert client.get(f"{changelist}add/").status_code == 403
    answer = client.post(changelist, {"action": "unlink", "_selected_action": [str(linked.pk)]})
    assert answer.status_code == 302
    assert not AccountWallet.objects.exists()
    [record] = audit("wallet.unlinked")
    assert (record.actor_id, record.details) == (str(admin.pk), {"person": str(dana.pk)})
