"""The console names people and channels, not ids, in one form ("Full Name (username)" and the
channel's name), and writes every time in one format ("2026-12-07 11:33:38 UTC")."""

import re

import pytest

from envelopes.evaluation.reviews import review_envelope
from envelopes.requests.decisions import act
from governance.choices import Role
from tests.test_inbox_requests import ask, open_channel, request_page
from tests.test_reviews import submit as evaluate

pytestmark = pytest.mark.django_db

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ONE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")


@pytest.fixture
def people(make_person):
    return {
        "owner": make_person(
            roles=[Role.GOVERNANCE_APPROVER], username="olivia", first_name="Olivia", last_name="Owner"
        ),
        "alice": make_person(
            roles=[Role.GOVERNANCE_APPROVER, Role.GOVERNANCE_REVIEWER], username="alice", first_name="Alice"
        ),
    }


def chain_performers(html: str) -> list[str]:
    table = re.search(r'<table class="review-chain">(.*?)</table>', html, re.S).group(1)
    return [cell.strip() for cell in re.findall(r'<td title="[^"]*">([^<]*)</td>', table)]


def test_the_request_pages_audit_chain_names_the_channel_and_the_person(client, people):
    channel, _ = open_channel(people["owner"], name="deploy-bot")
    approval = ask(channel)
    act(channel.organization_id, approval.pk, people["alice"], "approve")
    client.force_login(people["alice"])
    performers = chain_performers(client.get(request_page(approval)).content.decode())
    assert "channel · deploy-bot" in performers and "user · Alice (alice)" in performers
    assert not any(UUID.search(p) for p in performers)


def test_an_evaluation_review_names_its_reviewer_as_requests_name_their_decider(client, demo, people):
    escalation = evaluate(demo)
    review_envelope(demo, escalation.pk, "reject", people["alice"], notes="not now")
    client.force_login(people["alice"])
    html = client.get(f"/admin/envelopes/envelope/{escalation.pk}/review/").content.decode()
    outcome = re.search(r'id="review-outcome">(.*?)</p>', html, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", outcome).split() == ["Rejected", "by", "Alice", "(alice)"]
    assert "user · Alice (alice)" in chain_performers(html)


def test_the_envelope_list_shows_requests_title_and_status_and_one_date_format(client, demo, people):
    channel, _ = open_channel(people["owner"], name="deploy-bot")
    approval = ask(channel, title="Rotate the DNS keys")
    evaluate(demo)
    client.force_login(people["alice"])
    html = client.get("/admin/envelopes/envelope/").content.decode()
    rows = re.findall(r"<tr>(.*?)</tr>", re.search(r'<table id="result_list">(.*?)</table>', html, re.S).group(1), re.S)
    request_row = next(r for r in rows if "Rotate the DNS keys" in r)
    assert "via deploy-bot" in request_row and "Waiting" in request_row and "Approval request" in request_row
    evaluation_row = next(r for r in rows if "agent-payments-prod" in r)
    assert "Escalate" in evaluation_row and "CONFIDENCE_BELOW_THRESHOLD" in evaluation_row
    for row in (request_row, evaluation_row):
        assert ONE_FORMAT.search(row), row
    assert str(approval.pk)[:8] in request_row


def test_a_decided_escalation_card_names_its_reviewer_in_the_one_form(client, demo, people):
    escalation = evaluate(demo)
    review_envelope(demo, escalation.pk, "approve", people["alice"])
    channel, _ = open_channel(people["owner"], name="deploy-bot")
    approval = ask(channel)
    act(channel.organization_id, approval.pk, people["alice"], "approve")
    client.force_login(people["alice"])
    html = client.get("/admin/?state=decided").content.decode()
    outcomes = [
        re.sub(r"<[^>]+>|\s+", " ", o).strip() for o in re.findall(r'class="inbox-outcome[^"]*">(.*?)</', html, re.S)
    ]
    assert "Approved by Alice (alice)" in outcomes, outcomes
    assert all("by alice" not in o for o in outcomes), outcomes


def test_the_audit_event_list_names_performers(client, people, make_person):
    channel, _ = open_channel(people["owner"], name="deploy-bot")
    approval = ask(channel)
    act(channel.organization_id, approval.pk, people["alice"], "approve")
    client.force_login(make_person(username="root", is_superuser=True))
    html = client.get("/admin/evidence/auditevent/").content.decode()
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r'<td class="field-performer">(.*?)</td>', html, re.S)
    ]
    assert "channel · deploy-bot" in cells and "user · Alice (alice)" in cells, cells
    assert not any(UUID.search(c) for c in cells), cells
