"""Signed webhooks: decisions reach the agent's receiver signed twice (AIOS and Standard
Webhooks), failures retry on the schedule, 410 switches the webhook off, the sweeper finds
lost tasks, targets are vetted at submit and at delivery, one attempt is sent once."""

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import logging
import socket
import ssl
import threading
import time
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import connection, connections
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook, WebhookVerificationError

from envelopes.choices import DeliveryStatus
from envelopes.delivery import outbox, webhooks
from envelopes.delivery.tasks import deliver_webhook, sweep_deliveries
from envelopes.models import Channel, Delivery
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.decisions import act, decision_payload
from envelopes.requests.submissions import submit_request, validate_submission
from evidence.models import AdminAuditRecord
from governance import network as webhook_targets
from governance.celery import app as celery_app
from governance.choices import Role
from governance.errors import Invalid

pytestmark = pytest.mark.django_db


# --- a real receiver on 127.0.0.1 ----------------------------------------------------------


class Receiver:
    """A threaded HTTP server that records every request and answers from a script:
    ``answers`` (status codes, used in order, then 200), ``delay`` before answering, or
    ``trickle`` (send the status line a byte at a time)."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.trickle = False
        self.sni: list[str | None] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.trickle:
                    for byte in b"HTTP/1.1 200 OK\r\n":
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.2)
                    return
                reply = json.dumps({"received": True, "status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook", host="127.0.0.1", scheme="http"):
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def short_schedule(settings):
    settings.MANDATE_WEBHOOK_RETRY_SCHEDULE = [0.2, 0.4]


@pytest.fixture
def eager_tasks():
    """Celery runs tasks inline. Set on the app: it reads CELERY_TASK_ALWAYS_EAGER from the
    settings once, so overriding the setting after that would change nothing (and before
    that, would stick for the rest of the session)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def dispatched(monkeypatch):
    """Record the tasks the outbox queues instead of queueing them: (delivery id, countdown)."""
    calls = []
    monkeypatch.setattr(outbox, "dispatch", lambda delivery_id, countdown=None: calls.append((delivery_id, countdown)))
    return calls


@pytest.fixture
def channel(make_person):
    owner = make_person(username="agent-owner")
    _, token = create_invite(owner)
    channel, _, secret = register_channel(token, name="Domain agent")
    channel.secret = secret
    return channel


@pytest.fixture
def approver(make_person):
    return make_person(roles=[Role.GOVERNANCE_APPROVER], username="approver")


def make_delivery(channel, url, *, body=None, event="decision", **fields) -> Delivery:
    fields.setdefault("next_attempt_at", timezone.now())
    payload = body if body is not None else {"request_id": "r-1", "status": "approved"}
    return Delivery.objects.create(
        channel=channel, event=event, url=url, body=json.dumps(payload, separators=(",", ":")), **fields
    )


def submit(channel, url, **fields):
    data = {"type": "approval_request", "title": "Transfer example.com", "return_webhook": url, **fields}
    return submit_request(channel, data, json.dumps(data))


# --- signatures ----------------------------------------------------------------------------


def test_a_decision_reaches_the_receiver_signed_with_both_header_families(
    channel, approver, receiver, allow_private, eager_tasks, django_capture_on_commit_callbacks
):
    request = submit(channel, receiver.url())
    with django_capture_on_commit_callbacks(execute=True):
        act(channel.organization_id, request.pk, approver, "approve", comment="fine")

    assert len(receiver.requests) == 1
    delivery = Delivery.objects.get(request=request)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    sent = receiver.requests[0]
    headers, body = sent["headers"], sent["body"]
    request.refresh_from_db()
    assert json.loads(body) == decision_payload(request)
    assert json.loads(body)["status"] == "approved"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "Mandate-Webhooks/1"
    assert headers["X-AIGOS-Delivery"] == headers["webhook-id"] == str(delivery.pk)
    assert headers["X-AIGOS-Timestamp"] == headers["webhook-timestamp"]
    assert abs(int(headers["X-AIGOS-Timestamp"]) - time.time()) < 60

    # AIOS Govern: what the reference's JS does, in Python (timing-safe compare).
    expected = "sha256=" + hmac.new(channel.secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["X-AIGOS-Signature"])
    # Standard Webhooks, with the reference library.
    assert Webhook(channel.secret).verify(body, headers) == json.loads(body)


def test_a_changed_body_or_an_old_timestamp_fails_verification(channel, receiver, allow_private):
    delivery = make_delivery(channel, receiver.url())
    assert webhooks.deliver(delivery.pk) == "delivered"
    headers, body = receiver.requests[0]["headers"], receiver.requests[0]["body"]
    forged = body.replace(b"approved", b"rejected")

    aigos = "sha256=" + hmac.new(channel.secret.encode(), forged, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(aigos, headers["X-AIGOS-Signature"])
    with pytest.raises(WebhookVerificationError):
        Webhook(channel.secret).verify(forged, headers)
    # A replay, a day later, with the same headers: Standard Webhooks' timestamp is signed.
    old = int(headers["webhook-timestamp"]) - 86400
    replayed = {
        **headers,
        "webhook-timestamp": str(old),
        "webhook-signature": webhooks.standard_signature(str(delivery.pk), old, body, channel.secret),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(channel.secret).verify(body, replayed)


def test_standard_signature_matches_a_manual_computation():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = '{"a":"é"}'.encode()
    manual = hmac.new(b"k" * 32, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert webhooks.standard_signature("msg_1", 1700000000, body, secret) == "v1," + base64.b64encode(manual).decode()


def test_nothing_secret_is_logged(channel, receiver, allow_private, short_schedule, dispatched, caplog):
    receiver.answers = [500]
    delivery = make_delivery(channel, receiver.url())
    with caplog.at_level(logging.DEBUG):
        webhooks.deliver(delivery.pk)
    signature = receiver.requests[0]["headers"]["X-AIGOS-Signature"]
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "webhook attempt failed" in logged
    assert channel.secret not in logged and signature.removeprefix("sha256=") not in logged
    assert receiver.requests[0]["headers"]["webhook-signature"].removeprefix("v1,") not in logged


# --- retries, 410, timeouts ----------------------------------------------------------------


def test_a_failed_attempt_is_retried_on_the_schedule(channel, receiver, allow_private, short_schedule, dispatched):
    receiver.answers = [500]
    delivery = make_delivery(channel, receiver.url())

    assert webhooks.deliver(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code == 500
    assert '"status": 500' in delivery.last_response_excerpt
    assert delivery.last_error == "receiver answered 500"
    wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 0.15 < wait < 0.3
    assert dispatched == [(str(delivery.pk), 0.2)]

    assert webhooks.deliver(delivery.pk) == "skipped"  # not due yet: the early task does nothing
    time.sleep(0.25)
    assert webhooks.deliver(delivery.pk) == "delivered"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert delivery.last_status_code == 200 and delivery.last_error == ""
    assert len(receiver.requests) == 2
    # Each attempt is signed afresh, under the same delivery id (the idempotency key).
    assert {r["headers"]["X-AIGOS-Delivery"] for r in receiver.requests} == {str(delivery.pk)}


def test_after_the_last_retry_the_delivery_is_failed(channel, receiver, allow_private, settings, dispatched):
    settings.MANDATE_WEBHOOK_RETRY_SCHEDULE = [0, 0]
    receiver.answers = [503, 502, 500]
    delivery = make_delivery(channel, receiver.url())

    outcomes = [webhooks.deliver(delivery.pk) for _ in range(4)]

    assert outcomes == ["retry", "retry", "failed", "skipped"]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 3
    assert delivery.last_status_code == 500
    assert [countdown for _, countdown in dispatched] == [0, 0]
    assert len(receiver.requests) == 3


def test_the_default_schedule_is_1m_5m_15m_1h_6h(settings):
    del settings.MANDATE_WEBHOOK_RETRY_SCHEDULE
    assert webhooks.retry_schedule() == (60, 300, 900, 3600, 21600)


def test_retries_through_the_task_queue_reach_the_receiver(
    channel, approver, receiver, allow_private, short_schedule, eager_tasks, django_capture_on_commit_callbacks
):
    """With tasks inline the retry's task runs before it is due (eager ignores countdown)
    and does nothing; the sweeper's next pass sends it."""
    receiver.answers = [500]
    request = submit(channel, receiver.url())
    with django_capture_on_commit_callbacks(execute=True):
        act(channel.organization_id, request.pk, approver, "approve")
    delivery = Delivery.objects.get(request=request)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1

    time.sleep(0.25)
    deliver_webhook.delay(str(delivery.pk))

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert len(receiver.requests) == 2


def test_410_disables_the_channels_webhook(channel, approver, receiver, allow_private, dispatched):
    receiver.answers = [410]
    gone = make_delivery(channel, receiver.url())
    queued = make_delivery(channel, receiver.url())

    assert webhooks.deliver(gone.pk) == "disabled"

    gone.refresh_from_db()
    assert gone.status == DeliveryStatus.DISABLED and gone.last_status_code == 410
    assert Channel.objects.get(pk=channel.pk).webhook_disabled
    assert dispatched == []
    # Deliveries already queued for the channel are not sent...
    assert webhooks.deliver(queued.pk) == "disabled"
    assert len(receiver.requests) == 1
    # ...and later decisions queue none.
    request = submit(channel, receiver.url())
    act(channel.organization_id, request.pk, approver, "approve")
    assert not Delivery.objects.filter(request=request).exists()


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(
    channel, receiver, allow_private, short_schedule, settings, dispatched
):
    settings.MANDATE_WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.delay = 2
    delivery = make_delivery(channel, receiver.url())

    started = time.monotonic()
    assert webhooks.deliver(delivery.pk) == "retry"
    assert time.monotonic() - started < 1.5

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code is None
    assert delivery.last_error == "timed out after 0.5 s"


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(
    channel, receiver, allow_private, short_schedule, settings, dispatched
):
    settings.MANDATE_WEBHOOK_TIMEOUT_SECONDS = 0.6
    receiver.trickle = True  # one byte every 0.2 s: each read is quick, the whole is not
    delivery = make_delivery(channel, receiver.url())

    started = time.monotonic()
    webhooks.deliver(delivery.pk)
    assert time.monotonic() - started < 1.5

    delivery.refresh_from_db()
    assert delivery.last_error == "timed out after 0.6 s"


def test_a_refused_connection_is_a_failed_attempt(channel, allow_private, short_schedule, dispatched):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    delivery = make_delivery(channel, f"http://127.0.0.1:{closed_port}/hook")

    assert webhooks.deliver(delivery.pk) == "retry"

    delivery.refresh_from_db()
    assert delivery.last_error.startswith("connection failed: ConnectionRefusedError")
    assert delivery.attempts == 1 and dispatched == [(str(delivery.pk), 0.2)]


def test_a_crash_during_an_attempt_counts_as_a_failed_attempt(
    channel, receiver, allow_private, short_schedule, dispatched, monkeypatch
):
    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(webhooks, "signed_headers", broken)
    delivery = make_delivery(channel, receiver.url())

    assert webhooks.deliver(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_error == "internal error: RuntimeError" and delivery.attempts == 1
    assert receiver.requests == [] and dispatched == [(str(delivery.pk), 0.2)]


# --- the sweeper ---------------------------------------------------------------------------


def test_the_sweeper_sends_a_delivery_whose_task_was_lost(
    channel, receiver, allow_private, eager_tasks, django_capture_on_commit_callbacks
):
    lost = make_delivery(channel, receiver.url(), next_attempt_at=timezone.now() - timedelta(minutes=5))
    recent = make_delivery(channel, receiver.url(), next_attempt_at=timezone.now() - timedelta(seconds=5))

    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_deliveries() == 1

    lost.refresh_from_db()
    recent.refresh_from_db()
    assert lost.status == DeliveryStatus.DELIVERED
    assert [r["headers"]["X-AIGOS-Delivery"] for r in receiver.requests] == [str(lost.pk)]
    # Overdue by less than the grace period: its task may still be in the queue.
    assert recent.status == DeliveryStatus.PENDING and recent.attempts == 0


def test_the_sweeper_does_not_queue_a_row_again_within_the_grace_period(channel, dispatched):
    lost = make_delivery(channel, "https://hooks.example.com/x", next_attempt_at=timezone.now() - timedelta(minutes=5))
    make_delivery(
        channel,
        "https://hooks.example.com/y",
        status=DeliveryStatus.FAILED,
        next_attempt_at=timezone.now() - timedelta(minutes=5),
    )

    assert webhooks.sweep() == [str(lost.pk)]
    assert webhooks.sweep() == []
    assert webhooks.sweep(now=timezone.now() + timedelta(minutes=2)) == [str(lost.pk)]


def test_a_worker_killed_mid_send_is_recovered_after_its_lease(channel, receiver, allow_private, dispatched):
    delivery = make_delivery(channel, receiver.url())
    assert webhooks.claim(delivery.pk) is not None  # ...and the worker dies here

    assert webhooks.sweep() == []  # in flight: the lease has not run out
    elapsed = webhooks.lease() + webhooks.sweep_grace() + timedelta(seconds=1)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=F("next_attempt_at") - elapsed)
    assert webhooks.sweep() == [str(delivery.pk)]
    assert webhooks.deliver(delivery.pk) == "delivered"
    delivery.refresh_from_db()
    assert delivery.attempts == 2


def test_a_broker_outage_does_not_fail_the_decision(
    channel, approver, receiver, allow_private, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(deliver_webhook, "apply_async", broker_down)
    request = submit(channel, receiver.url())
    with django_capture_on_commit_callbacks(execute=True):
        act(channel.organization_id, request.pk, approver, "approve")

    delivery = Delivery.objects.get(request=request)
    assert delivery.status == DeliveryStatus.PENDING  # the sweeper will send it


# --- SSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/hook",
        "https://api.localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://hooks.example.com/hook",
        "https://user:pw@hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "https://hooks.example.com:99999/hook",
    ],
)
def test_a_private_or_malformed_return_webhook_is_refused_at_submit(channel, settings, url):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    data = {"type": "approval_request", "title": "t", "return_webhook": url}
    with pytest.raises(Invalid) as refused:
        validate_submission(channel, data)
    assert "return_webhook" in refused.value.error


def test_the_api_answers_400_naming_return_webhook_for_a_metadata_target(make_person, settings):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    _, token = create_invite(make_person(username="api-owner"))
    channel, api_key, _ = register_channel(token)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")

    response = client.post(
        f"/api/channels/{channel.pk}/requests",
        {"type": "approval_request", "title": "t", "return_webhook": "https://169.254.169.254/latest/meta-data/"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"error": "return_webhook: resolves to a private or metadata address"}


def test_a_name_resolving_to_a_private_address_is_refused_at_submit(channel, settings, monkeypatch):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(Invalid) as refused:
        validate_submission(channel, {"type": "approval_request", "title": "t", "return_webhook": "https://x.test/"})
    assert "private or metadata" in refused.value.error


def test_private_targets_are_accepted_when_allowed(channel, allow_private):
    submission = validate_submission(
        channel, {"type": "approval_request", "title": "t", "return_webhook": "http://127.0.0.1:9/hook"}
    )
    assert submission.fields["return_webhook"] == "http://127.0.0.1:9/hook"


def test_a_host_that_rebinds_to_a_private_address_is_not_sent_to(
    channel, settings, short_schedule, dispatched, monkeypatch
):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: ["93.184.215.14"])
    assert webhook_targets.check_webhook_url("https://rebind.test/hook") is None  # at submit: public
    delivery = make_delivery(channel, "https://rebind.test/hook")

    monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: ["169.254.169.254"])  # at delivery

    def no_connections(*args, **kwargs):
        raise AssertionError("a connection was opened")

    monkeypatch.setattr(socket, "create_connection", no_connections)
    assert webhooks.deliver(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_error == "not sent: the target resolves to a private or metadata address"
    assert delivery.attempts == 1 and delivery.status == DeliveryStatus.PENDING


def test_the_connection_goes_to_the_vetted_address_with_the_original_host_header(
    channel, receiver, allow_private, monkeypatch
):
    looked_up = []

    def resolve(host, port):
        looked_up.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(webhook_targets, "resolve", resolve)
    delivery = make_delivery(channel, receiver.url(host="hooks.agent.test", path="/in?x=1"))

    assert webhooks.deliver(delivery.pk) == "delivered"
    assert looked_up == ["hooks.agent.test"]
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.agent.test:{receiver.port}"


def _tls_pair(tmp_path, hostname):
    """A throwaway CA and a certificate for ``hostname`` it signed."""
    now = dt.datetime.now(dt.UTC)

    def cert(subject, issuer, key, signer, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        else:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("Mandate test CA", "Mandate test CA", ca_key, ca_key, True)
    leaf = cert(hostname, "Mandate test CA", leaf_key, ca_key, False)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def test_https_is_pinned_with_the_hostname_for_sni_and_the_certificate(channel, tmp_path, settings, monkeypatch):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = False
    server_tls, client_tls = _tls_pair(tmp_path, "hooks.agent.test")
    tls_receiver = Receiver(tls=server_tls)
    try:
        monkeypatch.setattr(webhooks, "_tls_context", lambda: client_tls)
        # The name is public at the check; the socket is then steered to the local receiver,
        # which only works if the TLS layer still uses the name (SNI, certificate).
        monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: ["93.184.215.14"])
        real_connect = socket.create_connection
        dialled = []

        def to_receiver(address, *args):
            dialled.append(address)
            return real_connect(("127.0.0.1", tls_receiver.port), *args)

        monkeypatch.setattr(socket, "create_connection", to_receiver)
        delivery = make_delivery(channel, f"https://hooks.agent.test:{tls_receiver.port}/hook")

        assert webhooks.deliver(delivery.pk) == "delivered"
        assert dialled == [("93.184.215.14", tls_receiver.port)]
        assert tls_receiver.sni == ["hooks.agent.test"]
        assert tls_receiver.requests[0]["headers"]["Host"] == f"hooks.agent.test:{tls_receiver.port}"
    finally:
        tls_receiver.close()


def test_a_certificate_for_another_name_fails_the_attempt(
    channel, tmp_path, allow_private, short_schedule, dispatched, monkeypatch
):
    server_tls, client_tls = _tls_pair(tmp_path, "someone-else.test")
    tls_receiver = Receiver(tls=server_tls)
    try:
        monkeypatch.setattr(webhooks, "_tls_context", lambda: client_tls)
        monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: ["127.0.0.1"])
        delivery = make_delivery(channel, f"https://hooks.agent.test:{tls_receiver.port}/hook")

        assert webhooks.deliver(delivery.pk) == "retry"
        delivery.refresh_from_db()
        assert "SSLCertVerificationError" in delivery.last_error
        assert tls_receiver.requests == []
    finally:
        tls_receiver.close()


# --- exclusivity ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_row_send_it_once(channel, receiver, allow_private):
    receiver.delay = 0.3
    delivery = make_delivery(channel, receiver.url())
    workers = 6
    start, outcomes = threading.Barrier(workers), []

    def worker():
        try:
            start.wait()
            outcomes.append(webhooks.deliver(delivery.pk))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["delivered"] + ["skipped"] * (workers - 1)
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.status == DeliveryStatus.DELIVERED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_sweeper_and_a_task_racing_for_an_overdue_row_send_it_once(channel, receiver, allow_private, dispatched):
    assert connection.vendor == "postgresql"
    receiver.delay = 0.2
    delivery = make_delivery(channel, receiver.url(), next_attempt_at=timezone.now() - timedelta(minutes=5))
    start, outcomes = threading.Barrier(3), []

    def run(work):
        try:
            start.wait()
            outcomes.append(work())
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=(lambda: webhooks.deliver(delivery.pk),)),
        threading.Thread(target=run, args=(lambda: webhooks.deliver(delivery.pk),)),
        threading.Thread(target=run, args=(webhooks.sweep,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for delivery_id, _ in dispatched:  # what the sweeper queued, run now
        outcomes.append(webhooks.deliver(delivery_id))

    assert outcomes.count("delivered") == 1
    assert len(receiver.requests) == 1


def test_a_stale_worker_does_not_overwrite_a_replayed_delivery(channel, receiver, allow_private, dispatched):
    delivery = make_delivery(channel, receiver.url())
    claimed = webhooks.claim(delivery.pk)
    webhooks.replay(Delivery.objects.filter(pk=delivery.pk), replayed_by="admin")

    assert webhooks._settle(claimed, status=DeliveryStatus.FAILED) is False
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0


# --- the admin page ------------------------------------------------------------------------


@pytest.fixture
def platform_admin(make_person):
    return make_person(roles=[Role.PLATFORM_ADMIN], username="platform-admin")


def test_admin_webhooks_redirects_to_the_delivery_list(client, platform_admin, channel):
    failed = make_delivery(
        channel,
        "https://hooks.example.com/in",
        status=DeliveryStatus.FAILED,
        attempts=6,
        last_status_code=502,
        last_response_excerpt="bad gateway",
    )
    client.force_login(platform_admin)

    response = client.get("/admin/webhooks", follow=True)

    assert response.redirect_chain[0] == ("/admin/envelopes/delivery/", 302)
    html = response.content.decode()
    assert "https://hooks.example.com/in" in html and "bad gateway" in html and "502" in html
    assert "Replay the selected deliveries" in html
    assert client.get(f"/admin/envelopes/delivery/{failed.pk}/change/").status_code == 200


def test_admins_see_only_their_organizations_deliveries(client, platform_admin, channel):
    from governance.services.people import create_person, ensure_organization

    other_org = ensure_organization("globex", "Globex")
    _, token = create_invite(create_person(other_org, "globex-owner"))
    other_channel, _, _ = register_channel(token)
    make_delivery(other_channel, "https://globex.example.com/in")
    make_delivery(channel, "https://acme.example.com/in")
    client.force_login(platform_admin)

    html = client.get("/admin/envelopes/delivery/").content.decode()

    assert "acme.example.com" in html and "globex.example.com" not in html


def test_people_without_the_admin_role_cannot_open_deliveries(client, make_person):
    client.force_login(make_person(roles=[Role.GOVERNANCE_APPROVER, Role.PLATFORM_OPERATOR]))
    assert client.get("/admin/envelopes/delivery/").status_code == 403


def test_replay_sends_failed_deliveries_again_and_records_who(
    client, platform_admin, channel, receiver, allow_private, eager_tasks, django_capture_on_commit_callbacks
):
    failed = [
        make_delivery(channel, receiver.url(), status=DeliveryStatus.FAILED, attempts=6, last_status_code=500)
        for _ in range(2)
    ]
    Channel.objects.filter(pk=channel.pk).update(webhook_disabled=True)
    client.force_login(platform_admin)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/envelopes/delivery/",
            {"action": "replay", "_selected_action": [str(d.pk) for d in failed]},
            follow=True,
        )

    assert "Replaying 2 deliveries." in response.content.decode()
    assert len(receiver.requests) == 2
    for delivery in failed:
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert not Channel.objects.get(pk=channel.pk).webhook_disabled
    record = AdminAuditRecord.objects.get(action="webhook.replayed")
    assert record.actor_id == "platform-admin"
    assert sorted(record.details["deliveries"]) == sorted(str(d.pk) for d in failed)


def test_replay_notes_who_replayed_on_the_delivery(channel, dispatched):
    delivery = make_delivery(channel, "https://hooks.example.com/in", status=DeliveryStatus.FAILED, attempts=6)

    webhooks.replay(Delivery.objects.filter(pk=delivery.pk), replayed_by="alice")

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0
    assert delivery.last_error.startswith("replayed by alice at ")
