"""The action gate's egress guard (envelopes/gate/providers/egress.py) against a local target."""

import asyncio
import time

import pytest

from envelopes.gate.plan import ExecutionPlan
from envelopes.gate.providers import egress
from tests.gate_target import Target


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def rules(domains=("127.0.0.1",), methods=("GET",), profile="proxy_allowlist", max_bytes=1024 * 1024, timeout=5.0):
    return egress.EgressRules(profile, tuple(domains), tuple(methods), max_bytes, timeout)


def test_allowed_call_returns_status_safe_headers_and_body(target):
    answer = egress.send(rules(), "GET", f"{target.base}/json?q=1")
    assert answer.status == 200
    assert answer.content == b'{"ok": true, "path": "/json", "query": {"q": "1"}}'
    assert answer.headers["x-request-id"] == "r1"
    assert "set-cookie" not in answer.headers
    assert target.seen[0]["headers"]["User-Agent"] == egress.USER_AGENT


@pytest.mark.parametrize(
    ("host", "entries", "allowed"),
    [
        ("api.example.com", ["api.example.com"], True),
        ("API.Example.com.", ["api.example.com"], True),
        ("a.api.example.com", ["api.example.com"], False),
        ("a.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evilexample.com", ["*.example.com"], False),
        ("example.com.evil.org", ["example.com"], False),
        ("anything.org", [], False),
    ],
)
def test_domain_allowlist_is_exact_or_wildcard_suffix(host, entries, allowed):
    assert egress.host_allowed(host, entries) is allowed


def test_domain_not_allowed_is_refused_before_anything_is_sent(target):
    with pytest.raises(egress.EgressRefused, match="domain 127.0.0.1 is not allowed"):
        egress.send(rules(domains=["api.example.com"]), "GET", f"{target.base}/json")
    assert target.seen == []


def test_method_not_allowed_is_refused(target):
    with pytest.raises(egress.EgressRefused, match="method DELETE is not allowed"):
        egress.send(rules(methods=["GET", "POST"]), "DELETE", f"{target.base}/json")
    assert target.seen == []


def test_profile_none_allows_no_network(target):
    with pytest.raises(egress.EgressRefused, match="allows no network"):
        egress.send(rules(profile="none"), "GET", f"{target.base}/json")
    assert target.seen == []


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/json", "not a url", "/relative/only"],
)
def test_other_schemes_credentials_and_relative_urls_are_refused(url):
    with pytest.raises(egress.EgressRefused):
        egress.send(rules(), "GET", url)


def test_host_is_the_one_httpx_connects_to(target):
    # urlsplit would call this 127.0.0.1; httpx (which connects) calls it evil.example: vet that one.
    with pytest.raises(egress.EgressRefused, match="evil.example"):
        egress.send(rules(), "GET", f"http://127.0.0.1:{target.port}\\@evil.example/json")
    assert target.seen == []


def test_private_address_is_refused_without_the_setting(target, settings):
    settings.MANDATE_EGRESS_ALLOW_PRIVATE = False
    with pytest.raises(egress.EgressRefused, match="private"):
        egress.send(rules(), "GET", f"{target.base}/json")
    with pytest.raises(egress.EgressRefused, match="private"):
        egress.send(rules(domains=["localhost"]), "GET", f"http://localhost:{target.port}/json")
    assert target.seen == []


def test_a_name_resolving_to_a_private_address_is_refused(target, settings, monkeypatch):
    settings.MANDATE_EGRESS_ALLOW_PRIVATE = False
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(egress.EgressRefused, match="private"):
        egress.send(rules(domains=["api.example.com"]), "GET", "https://api.example.com/x")


def test_cloud_metadata_is_refused_even_when_private_targets_are_allowed():
    with pytest.raises(egress.EgressRefused, match="private"):
        egress.send(rules(domains=["169.254.169.254"]), "GET", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(egress.EgressRefused, match="private"):
        egress.send(rules(domains=["metadata.google.internal"]), "GET", "http://metadata.google.internal/")


def test_connection_goes_to_the_vetted_address_with_the_url_host(target, monkeypatch):
    # The name resolves (once, when vetted) to the target; the request carries the name.
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["127.0.0.1"])
    answer = egress.send(rules(domains=["api.example.test"]), "GET", f"http://api.example.test:{target.port}/echo")
    assert answer.status == 200
    assert target.seen[0]["headers"]["Host"] == f"api.example.test:{target.port}"


def test_a_kept_alive_connection_is_never_reused_for_another_address(target, monkeypatch):
    # The name moves to an address where nothing listens: the call must go there (and fail),
    # not ride the connection opened to the address vetted before.
    url = f"http://api.example.test:{target.port}/json"
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["127.0.0.1"])
    assert egress.send(rules(domains=["api.example.test"]), "GET", url).status == 200
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["127.0.0.2"])
    with pytest.raises(egress.EgressFailed, match="could not connect"):
        egress.send(rules(domains=["api.example.test"]), "GET", url)
    assert len(target.seen) == 1


def test_redirect_elsewhere_is_returned_not_followed(target):
    other = Target()
    try:
        url = f"{target.base}/redirect?to={other.base}/json"
        answer = egress.send(rules(), "GET", url)
        assert answer.status == 302
        assert answer.headers["location"] == f"{other.base}/json"
        assert other.seen == []
    finally:
        other.close()


def test_same_origin_redirect_of_a_get_is_followed_but_not_of_a_post(target):
    answer = egress.send(rules(methods=["GET", "POST"]), "GET", f"{target.base}/redirect?to=/json")
    assert answer.status == 200
    assert [s["path"] for s in target.seen] == ["/redirect?to=/json", "/json"]
    answer = egress.send(rules(methods=["GET", "POST"]), "POST", f"{target.base}/redirect?to=/json", content=b"{}")
    assert answer.status == 302


@pytest.mark.parametrize("chunked", ["", "&chunked=1"])
def test_response_over_max_response_bytes_is_refused(target, chunked):
    assert egress.send(rules(max_bytes=4096), "GET", f"{target.base}/big?n=4096{chunked}").content == b"x" * 4096
    with pytest.raises(egress.EgressRefused, match="max_response_bytes"):
        egress.send(rules(max_bytes=4096), "GET", f"{target.base}/big?n=8192{chunked}")


def test_slow_target_times_out_at_the_actions_timeout(target):
    started = time.monotonic()
    with pytest.raises(egress.EgressTimeout):
        egress.send(rules(timeout=0.3), "GET", f"{target.base}/slow?s=2")
    assert time.monotonic() - started < 1.0


def test_trickling_target_cannot_outlast_the_wall_clock_deadline(target):
    # Every byte arrives well within a per-read timeout; the call still ends at the deadline.
    started = time.monotonic()
    with pytest.raises(egress.EgressTimeout):
        egress.send(rules(timeout=0.5), "GET", f"{target.base}/trickle?s=0.05")
    assert time.monotonic() - started < 1.2


def test_pooled_connection_is_reused_across_calls(target):
    for _ in range(5):
        assert egress.send(rules(), "GET", f"{target.base}/json").status == 200
    assert len({seen["client_port"] for seen in target.seen}) == 1


def test_a_connection_the_target_closed_is_replaced_for_a_get(target):
    assert egress.send(rules(), "GET", f"{target.base}/until-close").content == b"all of it"
    assert egress.send(rules(), "GET", f"{target.base}/json").status == 200
    assert len({seen["client_port"] for seen in target.seen}) == 2


def test_a_target_that_hangs_up_without_answering_fails_the_call(target):
    with pytest.raises(egress.EgressFailed, match="closed before an answer"):
        egress.send(rules(), "GET", f"{target.base}/hang-up")


def test_head_answer_ends_at_its_headers(target):
    answer = egress.send(rules(methods=["GET", "HEAD"]), "HEAD", f"{target.base}/json")
    assert (answer.status, answer.content, answer.headers["content-type"]) == (200, b"", "application/json")
    assert egress.send(rules(), "GET", f"{target.base}/json").status == 200  # a fresh connection


def test_an_interim_answer_is_skipped(target):
    answer = egress.send(rules(), "GET", f"{target.base}/early-hints")
    assert (answer.status, answer.content) == (200, b'{"final": true}')


def test_gzip_answer_is_decoded_within_the_cap(target):
    assert egress.send(rules(max_bytes=4096), "GET", f"{target.base}/gzip?n=4096").content == b"x" * 4096
    # A small compressed body that inflates past the cap is refused (no decompression bomb).
    with pytest.raises(egress.EgressRefused, match="max_response_bytes"):
        egress.send(rules(max_bytes=4096), "GET", f"{target.base}/gzip?n=1000000")


@pytest.mark.parametrize("name, value", [("X-A", "one\r\nX-Injected: two"), ("Bad Name", "v"), ("X-B", "nul\x00")])
def test_a_header_that_would_split_the_request_is_never_sent(target, name, value):
    with pytest.raises(egress.EgressFailed, match="cannot be sent"):
        egress.send(rules(), "GET", f"{target.base}/json", headers={name: value})
    assert target.seen == []


def test_send_async_on_a_running_loop(target):
    async def calls():
        return await asyncio.gather(*(egress.send_async(rules(), "GET", f"{target.base}/json") for _ in range(8)))

    answers = asyncio.run(calls())
    assert [a.status for a in answers] == [200] * 8


def test_rules_come_from_the_plan():
    plan = ExecutionPlan.from_manifest(
        {
            "action_id": "http_fetch",
            "version": "1.0.0",
            "provider_module_digest": "builtin:http_api",
            "template": {"method": "GET", "url_template": "{{url}}"},
            "egress": {"profile": "proxy_allowlist", "allowed_domains": ["api.example.com"]},
            "io": {"max_response_bytes": 2048},
            "resource_limits": {"timeout_seconds": 3},
            "declared_side_effects": ["http_read"],
        },
        allowed_domains=["api.example.com", "learned.example.org"],
    )
    assert egress.EgressRules.for_plan(plan) == egress.EgressRules(
        "proxy_allowlist", ("api.example.com", "learned.example.org"), ("GET", "HEAD"), 2048, 3.0
    )


def test_a_cookie_one_call_received_is_never_sent_on_another(target):
    egress.send(rules(), "GET", f"{target.base}/json")  # answers with a Set-Cookie
    egress.send(rules(), "GET", f"{target.base}/json")
    assert [seen["headers"].get("Cookie") for seen in target.seen] == [None, None]
