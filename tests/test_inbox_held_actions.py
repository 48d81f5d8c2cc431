"""Held actions (the action gate's approvals) in the one inbox, over HTTP (Django's test client):
their cards, the filters, "mine" and search, the held-action page with its plan, deciding
through the core (approve with a learned domain or path, deny with a reason), who may not,
and the admin list."""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.client import RequestFactory
from django.test.utils import CaptureQueriesContext

from envelopes.gate.rules import ActionRules
from envelopes.inbox import stream
from envelopes.inbox.console import viewer_of
from envelopes.inbox.views import inbox_context
from envelopes.models import Envelope, GateApproval
from envelopes.services import decide as core
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.choices import Role
from governance.services.people import create_person, ensure_organization
from tests.held_actions import fs_plan, hold_action, http_plan
from tests.test_inbox_requests import ask, cards_in, html_of, open_channel
from tests.test_reviews import submit as evaluate

pytestmark = pytest.mark.django_db

INBOX = "/admin/"


def action_page(envelope) -> str:
    return f"/admin/envelopes/envelope/{envelope.pk}/action/"


def card_of(html: str, envelope) -> str:
    start = html.index(f'data-card-id="{envelope.pk}"')
    return html[start : html.index("</article>", start)]


def approval_of(envelope) -> GateApproval:
    return GateApproval.objects.get(pk=envelope.pk)


@pytest.fixture
def people(make_person):
    return {
        "operator": make_person(roles=[Role.PLATFORM_OPERATOR], username="otto", first_name="Otto", last_name="Op"),
        "admin": make_person(roles=[Role.PLATFORM_ADMIN], username="ada"),
        "viewer": make_person(roles=[Role.PLATFORM_VIEWER], username="val"),
        "reviewer": make_person(roles=[Role.GOVERNANCE_REVIEWER], username="rita"),
        "owner": make_person(roles=[Role.GOVERNANCE_APPROVER], username="olivia"),
    }


@pytest.fixture
def held(organization):
    return hold_action(organization)


@pytest.fixture
def as_person(client):
    def sign_in(person):
        client.force_login(person)
        return client

    return sign_in


# --- cards ---------------------------------------------------------------------------------------


def test_a_held_action_is_a_card_with_its_target_risk_session_and_clock(as_person, people, held):
    html = html_of(as_person(people["operator"]).get(INBOX))
    assert cards_in(html) == [str(held.pk)]
    card = card_of(html, held)
    approval = held.gate_approval
    for text in (
        "Held action",
        "Held action: http_delete v1.0.0",
        "It calls a domain that is not on the action&#x27;s allowlist",  # the hold reason, in words
        "agent-ops",
        "high risk",
        "https://api.newvendor.io/v1/items/inv-42",
        "not on the allowlist",
        approval.session_id,
        "expires in",
        "then it expires and never runs",
        "you can decide",
    ):
        assert text in card, text
    assert f'href="{action_page(held)}"' in card and 'data-type="action"' in card


def test_people_who_may_not_decide_see_why_on_the_card(as_person, people, held):
    for person in (people["viewer"], people["reviewer"]):
        card = card_of(html_of(as_person(person).get(INBOX)), held)
        assert "you can decide" not in card
        assert "Deciding held actions needs platform.operator or platform.admin" in card
    assert "you can decide" in card_of(html_of(as_person(people["admin"]).get(INBOX)), held)


def test_a_claimed_held_action_says_it_is_running_not_who_may_decide(as_person, people, held, organization):
    core.decide(
        organization.pk, held.pk, core.Actor.of_person(people["admin"]), core.Decision("approve"), kind="action"
    )
    card = card_of(html_of(as_person(people["operator"]).get(INBOX)), held)
    assert "Approved by ada: the stored plan is running" in card
    assert "you can decide" not in card and "needs platform.operator" not in card


def test_the_type_filter_offers_and_keeps_held_actions(as_person, people, held, demo):
    escalation = evaluate(demo, confidence=0.4)
    request = ask(open_channel(people["owner"])[0])
    client = as_person(people["admin"])
    html = html_of(client.get(INBOX))
    assert set(cards_in(html)) == {str(held.pk), str(escalation.pk), str(request.pk)}
    assert '<option value="action">Held action</option>' in html
    assert cards_in(html_of(client.get(INBOX, {"type": "action"}))) == [str(held.pk)]
    assert str(held.pk) not in cards_in(html_of(client.get(INBOX, {"type": "evaluation"})))
    assert cards_in(html_of(client.get(INBOX, {"type": "action", "risk": "high"}))) == [str(held.pk)]
    assert cards_in(html_of(client.get(INBOX, {"type": "action", "risk": "low"}))) == []
    assert cards_in(html_of(client.get(INBOX, {"type": "action", "agent": "agent-ops"}))) == [str(held.pk)]
    assert str(held.pk) in cards_in(html_of(client.get(INBOX, {"state": "decide"})))


def test_held_actions_sort_by_risk_and_by_their_expiry(as_person, people, organization):
    low = hold_action(organization, risk_level="low", expires_in=timedelta(minutes=5))
    critical = hold_action(organization, risk_level="critical", expires_in=timedelta(hours=2))
    client = as_person(people["operator"])
    assert cards_in(html_of(client.get(INBOX))) == [str(critical.pk), str(low.pk)]
    assert cards_in(html_of(client.get(INBOX, {"sort": "expiring"}))) == [str(low.pk), str(critical.pk)]


def test_mine_holds_the_held_actions_an_operator_may_decide(as_person, people, held, demo, organization):
    escalation = evaluate(demo, confidence=0.4)
    claimed = hold_action(organization, agent_id="agent-other")
    core.decide(organization.pk, claimed.pk, core.Actor.of_person(people["admin"]), core.Decision("approve"))
    operator = html_of(as_person(people["operator"]).get(INBOX, {"scope": "mine"}))
    assert cards_in(operator) == [str(held.pk)]  # not the claimed one, not the escalation
    assert re.search(r'Mine <span class="inbox-scope-count">1</span>', operator)
    reviewer = html_of(as_person(people["reviewer"]).get(INBOX, {"scope": "mine"}))
    assert cards_in(reviewer) == [str(escalation.pk)]
    admin = html_of(as_person(people["admin"]).get(INBOX, {"scope": "mine"}))
    assert set(cards_in(admin)) == {str(held.pk), str(escalation.pk)}


def test_search_finds_held_actions_by_action_agent_trace_and_approval_id(as_person, people, held, organization):
    other = hold_action(organization, plan=http_plan("http_post", method="POST"), agent_id="agent-billing")
    approval = held.gate_approval
    client = as_person(people["viewer"])

    def found(q):
        return set(cards_in(html_of(client.get(INBOX, {"q": q}))))

    assert found("http_delete") == {str(held.pk)}
    assert found("HTTP_POST") == {str(other.pk)}
    assert found("agent-billing") == {str(other.pk)}
    assert found(approval.trace_id) == {str(held.pk)}
    assert found(approval.approval_id) == {str(held.pk)}
    assert found(approval.approval_id[4:16]) == {str(held.pk)}  # part of it, as people quote it
    assert found("http_ agent-ops") == {str(held.pk)}  # every word must match


def test_decided_held_actions_show_under_decided_with_who_decided(as_person, people, held, organization):
    _decide_as(people["operator"], held, "deny", comment="Not that vendor.")
    client = as_person(people["operator"])
    assert cards_in(html_of(client.get(INBOX))) == []
    decided = html_of(client.get(INBOX, {"state": "decided", "scope": "mine"}))
    assert cards_in(decided) == [str(held.pk)]
    assert "Denied by Otto Op (otto)" in card_of(decided, held)
    assert cards_in(html_of(as_person(people["admin"]).get(INBOX, {"state": "decided", "scope": "mine"}))) == []


def test_the_inbox_reads_held_actions_in_the_same_number_of_queries_for_3_and_30(db):
    def queries(slug: str, count: int) -> tuple[int, int]:
        organization = ensure_organization(slug, slug)
        operator = create_person(organization, f"{slug}-otto", roles=[Role.PLATFORM_OPERATOR])
        decider = create_person(organization, f"{slug}-ada", roles=[Role.PLATFORM_ADMIN])
        for n in range(count):
            envelope = hold_action(organization, agent_id=f"agent-{n % 4}")
            if n % 3 == 0:  # some claimed, named on their cards
                core.decide(organization.pk, envelope.pk, core.Actor.of_person(decider), core.Decision("approve"))
        request = RequestFactory().get(INBOX)
        request.user = type(operator).objects.get(pk=operator.pk)
        with CaptureQueriesContext(connection) as captured:
            inbox = inbox_context(request)["inbox"]
        return len(captured), len(inbox["cards"])

    few, few_cards = queries("few", 3)
    many, many_cards = queries("many", 30)
    assert (few_cards, many_cards) == (3, 30)
    # The organization, roles, the waiting groups, the held actions' refusals (one query for
    # all), the page, the agents' names, the deciders' names.
    assert few == many <= 7


# --- the held-action page ---------------------------------------------------------------------


def test_the_page_lays_out_the_plan_readably_with_raw_json_one_click_away(as_person, people, held):
    response = as_person(people["viewer"]).get(action_page(held))
    assert response.status_code == 200
    html = html_of(response)
    approval = held.gate_approval
    for text in (
        "Why it was held",
        "It calls a domain that is not on the action&#x27;s allowlist",
        '<code class="inbox-quiet">unresolved_domain</code>',
        "The plan that will run",
        "<code>http_delete</code> version <code>1.0.0</code>",
        "Built-in HTTP provider",
        "builtin:http_api",
        "https://api.newvendor.io/v1/items/inv-42",
        "domain <code>api.newvendor.io</code> · <strong>not on the allowlist</strong>",
        "https://{{host}}/v1/items/{{item_id}}",
        "<code>proxy_allowlist</code>",
        "<code>api.example.com</code>",
        "<code>ITEMS_TOKEN</code>",
        "values are never stored with the plan nor shown",
        "1,000,000",  # fuel
        "64 MB",
        "64 KiB",
        "1 MiB",
        "<code>http_status</code>",
        "expected_status",
        "<code>7</code>",  # policy version
        "calls_used",  # the budget snapshot
        approval.plan_hash,
        approval.request_hash,
        approval.approval_id,
        approval.trace_id,
        "<dt>item_id</dt>",  # the request body as a tree
        "Raw stored plan (JSON)",
        "Raw JSON request body",
        "Chain intact.",
        "ESCALATION_PENDING",
        "Audit chain",
    ):
        assert text in html, text
    assert "&quot;item_id&quot;: &quot;inv-42&quot;" in html  # raw, one click away


def test_a_viewer_sees_why_they_cannot_decide_and_no_form(as_person, people, held):
    html = html_of(as_person(people["viewer"]).get(action_page(held)))
    assert 'id="action-form"' not in html
    assert "Deciding held actions needs platform.operator or platform.admin." in html
    assert re.search(r'<button type="button" class="button review-approve" disabled', html)


def test_an_operator_approves_through_the_core_learning_the_domain(as_person, people, held):
    client = as_person(people["operator"])
    html = html_of(client.get(action_page(held)))
    assert 'id="action-form"' in html
    assert 'name="learn_domain" id="id_learn_domain" value="api.newvendor.io"' in html  # prefilled
    assert 'name="learn_path"' not in html  # an http action has no path to learn
    response = client.post(
        action_page(held), {"action": "approve", "learn_domain_on": "on", "learn_domain": " api.newvendor.io "}
    )
    assert response.status_code == 302 and response["Location"] == action_page(held)
    approval = approval_of(held)
    assert (approval.state, approval.decided_by, approval.learn_domain) == ("claimed", "otto", "api.newvendor.io")
    claimed = AuditEvent.objects.filter(chain_id=str(held.pk), event_type="GATE_APPROVAL_CLAIMED").get()
    assert claimed.payload["learn_domain"] == "api.newvendor.io" and claimed.performer_id == "otto"
    assert verify_chain(str(held.pk)).valid
    page = html_of(client.get(action_page(held)))
    assert "Approved. The stored plan is claimed for execution" in page
    assert "<strong>Approved, running</strong> by <strong>Otto Op (otto)</strong>" in page
    assert '<code id="action-learned-domain">api.newvendor.io</code>' in page
    assert 'id="action-form"' not in page and 'id="action-running"' in page
    assert "Chain intact." in page  # a claim may end the chain of a held action that still waits


def test_approving_without_ticking_learn_learns_nothing(as_person, people, held):
    client = as_person(people["operator"])
    client.post(action_page(held), {"action": "approve", "learn_domain": "api.newvendor.io"})
    approval = approval_of(held)
    assert (approval.state, approval.learn_domain) == ("claimed", "")


def test_ticking_learn_with_no_domain_is_refused_before_anything_is_sent(as_person, people, held):
    response = as_person(people["operator"]).post(
        action_page(held), {"action": "approve", "learn_domain_on": "on", "learn_domain": "  "}
    )
    assert response.status_code == 400
    assert "Name the domain to learn, or untick it." in html_of(response)
    assert approval_of(held).state == "pending"


def test_a_file_action_offers_to_learn_its_path(as_person, people, organization):
    held = hold_action(
        organization,
        plan=fs_plan(),
        body={"operation": "write", "path": "reports/q3.md", "content": "x"},
        hold_reason="unresolved_path",
    )
    client = as_person(people["operator"])
    html = html_of(client.get(action_page(held)))
    assert "reports/q3.md" in html and "not among the allowed paths" in html and "operation write" in html
    assert 'name="learn_path" id="id_learn_path" value="reports/q3.md"' in html
    assert 'name="learn_domain"' not in html
    client.post(action_page(held), {"action": "approve", "learn_path_on": "on", "learn_path": "reports/*.md"})
    approval = approval_of(held)
    assert (approval.state, approval.learn_path, approval.learn_domain) == ("claimed", "reports/*.md", "")


def test_denying_needs_a_reason_and_closes_it(as_person, people, held):
    client = as_person(people["operator"])
    refused = client.post(action_page(held), {"action": "deny", "comment": "   "})
    assert refused.status_code == 400
    assert "Say why you deny it" in html_of(refused)
    assert approval_of(held).state == "pending"
    response = client.post(action_page(held), {"action": "deny", "comment": "Unknown vendor."})
    assert response.status_code == 302
    approval = approval_of(held)
    assert (approval.state, approval.deny_reason, approval.decided_by) == ("denied", "Unknown vendor.", "otto")
    assert Envelope.objects.get(pk=held.pk).state == "closed"
    page = html_of(client.get(action_page(held)))
    assert "<strong>Denied</strong> by <strong>Otto Op (otto)</strong>" in page and "Unknown vendor." in page
    assert "GATE_APPROVAL_DENIED" in page and "ENVELOPE_CLOSED" in page


def test_a_non_operator_cannot_decide_by_forcing_the_post(as_person, people, held):
    for person in (people["viewer"], people["reviewer"]):
        response = as_person(person).post(action_page(held), {"action": "approve"})
        assert response.status_code == 403
        assert "Not recorded: deciding held actions needs platform.operator or platform.admin." in html_of(response)
    assert approval_of(held).state == "pending"
    assert as_person(people["owner"]).post(action_page(held), {"action": "deny", "comment": "no"}).status_code == 403
    assert approval_of(held).state == "pending"


def test_a_decision_sent_after_another_is_409_naming_who_decided(as_person, people, held):
    _decide_as(people["admin"], held, "deny", comment="Too risky today.")
    response = as_person(people["operator"]).post(action_page(held), {"action": "approve"})
    assert response.status_code == 409
    html = html_of(response)
    assert re.search(
        r"Not recorded: this held action was already denied by ada at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html
    )
    assert 'id="action-form"' not in html and "Too risky today." in html
    assert approval_of(held).state == "denied"


@pytest.mark.django_db(transaction=True)
def test_after_approval_the_page_shows_how_the_gates_run_ended(as_person, people, organization, monkeypatch):
    """With the gate's hook wired (here a stand-in recording a receipt or a failure, as the gate
    does after the claim commits, in the approving request's thread), the page the operator is
    sent back to shows how it ended."""
    ran = []

    def run(approval_id, outcome):
        approval = GateApproval.objects.select_related("envelope").get(approval_id=approval_id)
        ran.append(approval_id)
        decision = (
            core.Decision("complete", detail={"receipt_id": "rcpt_0001"})
            if outcome == "complete"
            else core.Decision("fail", comment="provider_error: connection refused")
        )
        core.decide(approval.envelope.organization_id, approval.pk, core.SYSTEM, decision, kind="action")

    client = as_person(people["operator"])
    executed, failing = hold_action(organization), hold_action(organization)
    monkeypatch.setattr(ActionRules, "run_claimed", staticmethod(lambda approval_id: run(approval_id, "complete")))
    page = html_of(client.post(action_page(executed), {"action": "approve"}, follow=True))
    assert "Approved and executed. Receipt rcpt_0001." in page
    assert "<strong>Approved and executed</strong> by <strong>Otto Op (otto)</strong>" in page
    assert '<code id="action-receipt">rcpt_0001</code>' in page and "GATE_APPROVAL_EXECUTED" in page
    monkeypatch.setattr(ActionRules, "run_claimed", staticmethod(lambda approval_id: run(approval_id, "fail")))
    page = html_of(client.post(action_page(failing), {"action": "approve"}, follow=True))
    assert "Approved, but executing the stored plan failed: provider_error: connection refused." in page
    assert '<dd id="action-failure">provider_error: connection refused</dd>' in page
    assert ran == [executed.gate_approval.approval_id, failing.gate_approval.approval_id]


def test_another_organizations_held_action_is_404_and_stays_pending(as_person, people):
    other = ensure_organization("globex", "Globex")
    theirs = hold_action(other)
    client = as_person(people["admin"])
    assert str(theirs.pk) not in html_of(client.get(INBOX))
    assert client.get(action_page(theirs)).status_code == 404
    assert client.post(action_page(theirs), {"action": "approve"}).status_code == 404
    assert approval_of(theirs).state == "pending"
    assert client.get("/admin/envelopes/envelope/not-a-uuid/action/").status_code == 404


def test_a_person_without_an_inbox_role_may_not_open_the_page(as_person, make_person, held):
    assert as_person(make_person(username="ned")).get(action_page(held)).status_code == 403


def test_the_envelope_and_review_urls_open_the_held_action_page(as_person, people, held):
    client = as_person(people["viewer"])
    response = client.get(f"/admin/envelopes/envelope/{held.pk}/review/")
    assert response.status_code == 302 and response["Location"] == action_page(held)
    listed = html_of(client.get("/admin/envelopes/envelope/"))
    assert "Held action: http_delete v1.0.0" in listed and "by <code>agent-ops</code>" in listed


# --- the admin list of held actions -----------------------------------------------------------


def test_the_held_actions_list_is_read_only_scoped_and_opens_the_page(as_person, people, held):
    theirs = hold_action(ensure_organization("globex", "Globex"), agent_id="agent-globex")
    client = as_person(people["viewer"])
    response = client.get("/admin/envelopes/gateapproval/")
    assert response.status_code == 200
    html = html_of(response)
    approval = held.gate_approval
    assert approval.approval_id in html and f'href="{action_page(held)}"' in html
    assert '<span class="inbox-pill inbox-gate-pending">Waiting</span>' in html
    assert '<span class="inbox-pill inbox-risk inbox-risk-high">high</span>' in html
    assert "<code>http_delete</code> 1.0.0" in html
    assert theirs.gate_approval.approval_id not in html
    change = client.get(f"/admin/envelopes/gateapproval/{held.pk}/change/")
    assert change.status_code == 302 and change["Location"] == action_page(held)
    assert client.get("/admin/envelopes/gateapproval/add/").status_code == 403
    _decide_as(people["operator"], held, "deny", comment="no")
    assert "Otto" not in html_of(client.get("/admin/envelopes/gateapproval/"))  # decided_by as recorded
    assert ">otto<" in html_of(client.get("/admin/envelopes/gateapproval/"))


# --- the live stream -------------------------------------------------------------------------------


def test_the_stream_counts_held_actions_as_decidable_for_operators_only(people, organization):
    before = {name: stream.inbox_state(_viewer(people[name])) for name in ("operator", "viewer")}
    held = hold_action(organization)
    operator = stream.inbox_state(_viewer(people["operator"]))
    viewer = stream.inbox_state(_viewer(people["viewer"]))
    assert operator.waiting == viewer.waiting == 1
    assert str(held.pk) in operator.decidable and str(held.pk) not in viewer.decidable
    event = stream.event_of(operator, before["operator"])
    assert event["arrived"] == [
        {
            "id": str(held.pk),
            "kind": "Held action",
            "title": "Held action: http_delete v1.0.0",
            "summary": "It calls a domain that is not on the action's allowlist",
            "url": action_page(held),
        }
    ]
    assert stream.event_of(viewer, before["viewer"])["arrived"] == []


# --- helpers -----------------------------------------------------------------------------------------


def _viewer(person):
    return viewer_of(SimpleNamespace(user=person))


def _decide_as(person, envelope, action, comment=""):
    core.decide(
        envelope.organization_id,
        envelope.pk,
        core.Actor.of_person(person),
        core.Decision(action, comment=comment),
        kind="action",
    )
