"""Agents' requests in the inbox, the request page and the Agents page, over HTTP (Django's
test client): who sees what, the filters, every action, and the channel pages."""

import json
import re
from datetime import timedelta

import pytest
from django.test.client import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from envelopes.inbox.views import inbox_context
from envelopes.models import ApprovalRequest, Channel, Tweak
from envelopes.requests.channels import authenticate_channel_key, create_invite, register_channel
from envelopes.requests.decisions import act, current_tweak_event
from envelopes.requests.submissions import submit_request
from evidence.models import AdminAuditRecord
from governance.choices import Role
from governance.models import Team
from governance.services.people import add_team_member, ensure_organization
from tests.test_reviews import submit as evaluate

pytestmark = pytest.mark.django_db

INBOX = "/admin/"


def request_page(approval) -> str:
    return f"/admin/envelopes/approvalrequest/{approval.pk}/change/"


def open_channel(owner, name="deploy-bot", agent_id=""):
    _, token = create_invite(owner)
    channel, key, _secret = register_channel(token, name=name, agent_id=agent_id)
    return channel, key


def ask(channel, **fields) -> ApprovalRequest:
    body = {
        "type": "approval_request",
        "title": "Transfer example.com to Cloudflare",
        "summary": "The agent wants to move the domain.",
        "risk_level": "medium",
        **fields,
    }
    return submit_request(channel, body, json.dumps(body))


def cards_in(html: str) -> list[str]:
    """The card ids in page order."""
    return re.findall(r'data-card-id="([0-9a-f-]{36})"', html)


@pytest.fixture
def people(make_person):
    manager = make_person(username="maria")  # no governance role: a manager
    return {
        "owner": make_person(roles=[Role.GOVERNANCE_APPROVER], username="olivia", manager=manager),
        "alice": make_person(roles=[Role.GOVERNANCE_APPROVER], username="alice"),
        "bob": make_person(roles=[Role.GOVERNANCE_APPROVER], username="bob"),
        "viewer": make_person(roles=[Role.PLATFORM_VIEWER], username="val"),
        "admin": make_person(roles=[Role.PLATFORM_ADMIN], username="ada"),
        "manager": manager,
        "nobody": make_person(username="ned"),
    }


@pytest.fixture
def channel(people):
    return open_channel(people["owner"])[0]


@pytest.fixture
def as_person(client):
    def sign_in(person):
        client.force_login(person)
        return client

    return sign_in


def html_of(response) -> str:
    return response.content.decode()


# --- the inbox ----------------------------------------------------------------------------------


def test_an_agents_request_appears_as_a_card_styled_by_its_hints(as_person, people, channel):
    approval = ask(
        channel,
        type="spend_approval",
        title="Buy 3 GPU hours",
        risk_level="high",
        payload={"amount": 1250, "currency": "USD", "vendor": "Lambda"},
        bg_color="#1b1b1b",
        badge="URGENT",
        accent_bar="green",
        pulse="strong",
        expires_at=(timezone.now() + timedelta(hours=3)).isoformat(),
        on_timeout="auto_reject",
    )
    html = html_of(as_person(people["alice"]).get(INBOX))
    assert cards_in(html) == [str(approval.pk)]
    card = html[html.index('<article class="inbox-card') :]
    card = card[: card.index("</article>")]
    for text in ("Spend approval", "Buy 3 GPU hours", "deploy-bot", "owner olivia", "USD 1,250", "high risk"):
        assert text in card
    assert "--card-bg: #1b1b1b" in card and "inbox-tone-dark" in card
    assert "inbox-ribbon inbox-ribbon-urgent" in card and ">URGENT<" in card
    assert "--card-accent: green" in card and "inbox-pulse-strong" in card
    assert "expires in" in card and "then it is rejected automatically" in card
    assert "you can decide" in card
    assert request_page(approval) in card


def test_escalations_and_agents_requests_share_one_inbox(as_person, people, demo, channel):
    escalation = evaluate(demo, confidence=0.4)
    approval = ask(channel)
    html = html_of(as_person(people["admin"]).get(INBOX))
    assert set(cards_in(html)) == {str(escalation.pk), str(approval.pk)}
    assert "Escalated evaluation" in html and "Approval request" in html


def test_cards_are_sorted_by_top_sort_then_risk_then_age(as_person, people, channel):
    old_low = ask(channel, title="old low", risk_level="low")
    medium = ask(channel, title="medium", risk_level="medium")
    critical = ask(channel, title="critical", risk_level="critical")
    pinned_low = ask(channel, title="pinned low", risk_level="low", top_sort=True)
    newer_critical = ask(channel, title="newer critical", risk_level="critical")
    html = html_of(as_person(people["alice"]).get(INBOX))
    expected = [pinned_low, critical, newer_critical, medium, old_low]
    assert cards_in(html) == [str(a.pk) for a in expected]
    newest = cards_in(html_of(as_person(people["alice"]).get(INBOX + "?sort=newest")))
    assert newest[0] == str(newer_critical.pk) and newest[-1] == str(old_low.pk)


def test_mine_holds_only_what_the_person_may_act_on_now(as_person, people, channel):
    theirs = ask(open_channel(people["alice"], name="alice-bot")[0], title="from alice's agent")
    own = ask(channel, title="from olivia's agent")  # olivia owns this channel: separation of duties
    client = as_person(people["owner"])
    html = html_of(client.get(INBOX + "?scope=mine"))
    assert cards_in(html) == [str(theirs.pk)]
    everything = html_of(client.get(INBOX))
    assert set(cards_in(everything)) == {str(theirs.pk), str(own.pk)}
    assert "You own this agent: separation of duties" in everything
    assert re.search(r'aria-current="page">Mine <span class="inbox-scope-count">1</span>', html)


def test_my_team_holds_requests_of_my_teammates_agents_and_routed_to_my_team(as_person, people, organization):
    team = Team.objects.create(organization=organization, name="Platform")
    add_team_member(team, people["alice"])
    add_team_member(team, people["bob"])
    teammate = ask(open_channel(people["bob"], name="bob-bot")[0], title="bob's agent")
    routed = ask(open_channel(people["admin"], name="ada-bot")[0], route="approve_team", team_id=str(team.pk))
    outsider = ask(open_channel(people["owner"], name="olivia-bot")[0], title="olivia's agent")
    html = html_of(as_person(people["alice"]).get(INBOX + "?scope=team"))
    assert set(cards_in(html)) == {str(teammate.pk), str(routed.pk)}
    assert str(outsider.pk) not in html


def test_filters_by_type_risk_channel_agent_and_state_live_in_the_url(as_person, people, channel, demo):
    other = open_channel(people["alice"], name="other-bot", agent_id="agent-payments-prod")[0]
    choice = ask(channel, type="choice", payload={"options": ["a", "b"]}, risk_level="low")
    critical = ask(channel, risk_level="critical")
    fyi = ask(other, type="informational", route="notify_manager")
    tweaked = ask(other, tweak_allowed=True)
    act(tweaked.channel.organization_id, tweaked.pk, people["bob"], "request_changes", comment="smaller")
    escalation = evaluate(demo, confidence=0.4)
    client = as_person(people["admin"])

    def ids(query):
        return set(cards_in(html_of(client.get(INBOX + query))))

    assert ids("?type=choice") == {str(choice.pk)}
    assert ids("?type=evaluation") == {str(escalation.pk)}
    assert ids("?risk=critical") == {str(critical.pk)}
    assert ids(f"?channel={other.pk}") == {str(fyi.pk), str(tweaked.pk)}
    assert ids("?agent=agent-payments-prod") == {str(fyi.pk), str(tweaked.pk), str(escalation.pk)}
    assert ids("?state=fyi") == {str(fyi.pk)}
    assert ids("?state=changes") == {str(tweaked.pk)}
    assert ids("?state=decide") == {str(choice.pk), str(critical.pk), str(escalation.pk)}
    act(choice.channel.organization_id, choice.pk, people["alice"], "choose", choice="a")
    assert ids("?state=decided") == {str(choice.pk)}
    assert ids("?state=decided&scope=mine") == set()  # the admin did not decide it
    assert ids("?type=nonsense&risk=extreme") == ids("")  # unknown values are ignored, never a 500


def test_a_person_without_a_role_sees_the_requests_routed_to_them(as_person, people, channel):
    routed = ask(channel, route="approve_manager", title="needs maria")
    other = ask(channel, title="for approvers")
    client = as_person(people["manager"])
    html = html_of(client.get(INBOX))
    assert cards_in(html) == [str(routed.pk)]
    assert "The inbox is for people holding" in html
    assert client.get(request_page(other)).status_code == 403
    response = client.post(request_page(routed), {"action": "approve"}, follow=True)
    assert "Approved." in html_of(response)
    assert ApprovalRequest.objects.get(pk=routed.pk).status == "approved"
    stranger = as_person(people["nobody"])
    assert cards_in(html_of(stranger.get(INBOX))) == []
    assert stranger.get(request_page(routed)).status_code == 403


def test_the_inbox_with_requests_reads_in_bounded_queries(people, channel, django_assert_max_num_queries):
    for n in range(10):
        ask(
            channel,
            title=f"request {n}",
            approval_rule={"type": "n_of_x", "required": 2, "approvers": ["alice", "bob"]},
        )
    request = RequestFactory().get(INBOX)
    request.user = people["alice"]
    # Roles, groups, candidates, the page, approvals, tweaks, declarations, the team count —
    # plus ``refusal`` per waiting request (its roles query and vote check).
    with django_assert_max_num_queries(10 + 10 * 2):
        inbox = inbox_context(request)["inbox"]
    assert len(inbox["cards"]) == 10 and all(card.may_act for card in inbox["cards"])


# --- the request page -------------------------------------------------------------------------


def test_the_request_page_renders_the_payload_readably_with_raw_json_one_click_away(as_person, people, channel):
    approval = ask(
        channel,
        type="spend_approval",
        payload={"amount": 1250.5, "currency": "EUR", "vendor": {"name": "Lambda", "region": "eu"}},
    )
    html = html_of(as_person(people["alice"]).get(request_page(approval)))
    assert "EUR 1,250.50" in html
    assert "<dt>vendor</dt>" in html and "<dt>region</dt>" in html
    assert '<details class="review-raw" id="raw-payload"><summary>Raw JSON payload</summary>' in html
    assert "Chain intact." in html and "ESCALATION_PENDING" in html
    assert "one approval or rejection decides" in html.lower()


def test_a_poll_request_embeds_its_poll_in_a_script_only_sandbox(as_person, people, channel):
    approval = ask(
        channel,
        type="poll_request",
        payload={
            "poll_provider": "ai-poll",
            "poll_url": "https://ai-poll.com/p/abc123",
            "poll_id": "abc123",
            "poll_render_hint": {"embed": "iframe", "width": 5000, "height": 400},
            "poll_instructions": "Click through to vote.",
        },
    )
    html = html_of(as_person(people["alice"]).get(request_page(approval)))
    frame = re.search(r"<iframe[^>]*>", html).group(0)
    assert 'src="https://ai-poll.com/p/abc123"' in frame
    assert 'sandbox="allow-scripts"' in frame and "allow-same-origin" not in html
    assert 'width="1200"' in frame  # clamped
    assert 'href="https://ai-poll.com/p/abc123" target="_blank" rel="noopener noreferrer"' in html
    assert "Click through to vote." in html


def test_a_poll_without_an_iframe_hint_is_a_link_only(as_person, people, channel):
    approval = ask(channel, type="poll_request", payload={"poll_url": "https://polls.example/p/1"})
    html = html_of(as_person(people["alice"]).get(request_page(approval)))
    assert "<iframe" not in html and 'href="https://polls.example/p/1"' in html


def test_an_fyi_card_is_acknowledged_from_its_page_by_the_person_it_is_for(as_person, people, channel):
    approval = ask(channel, type="informational", route="notify_manager", title="Backups finished")
    alice_page = html_of(as_person(people["alice"]).get(request_page(approval)))
    assert "This route does not give you a say on this request." in alice_page
    client = as_person(people["manager"])
    html = html_of(client.get(request_page(approval)))
    assert 'id="action-acknowledge"' in html and 'id="action-approve"' not in html and 'name="comment"' not in html
    response = client.post(request_page(approval), {"action": "acknowledge"}, follow=True)
    assert "Acknowledged. The agent is told." in html_of(response)
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("acknowledged", str(people["manager"].pk))


def test_choosing_an_option_decides_a_choice(as_person, people, channel):
    approval = ask(
        channel,
        type="choice",
        payload={"options": [{"id": "cf", "label": "Cloudflare"}, {"id": "r53", "label": "Route 53"}]},
    )
    client = as_person(people["alice"])
    html = html_of(client.get(request_page(approval)))
    assert 'name="choice" value="cf"' in html and 'id="action-choose"' in html and 'id="action-approve"' not in html
    assert client.post(request_page(approval), {"action": "choose"}).status_code == 400  # no option picked
    response = client.post(request_page(approval), {"action": "choose", "choice": "r53"}, follow=True)
    approval.refresh_from_db()
    assert (approval.status, approval.choice) == ("approved", "r53")
    assert "Chose</span> <strong>Route 53" in html_of(response)
    # The decider is recorded as the approval: "who acted" names them, the API lists them.
    acted = re.search(r'<ul class="request-votes">(.*?)</ul>', html_of(response), re.S)
    assert acted and "alice" in acted.group(1) and "made the choice" in acted.group(1)
    assert [(v.person, v.approve) for v in approval.approvals.all()] == [(people["alice"], True)]


def test_a_decided_choice_lists_its_decider_in_the_agents_approvals(people):
    channel, key = open_channel(people["owner"])
    approval = ask(channel, type="choice", payload={"options": ["us-east", "eu-west"]})
    act(channel.organization_id, approval.pk, people["alice"], "choose", choice="eu-west")
    body = APIClient().get(f"/api/requests/{approval.pk}", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert body["status"] == "approved" and body["decision"]["choice"] == "eu-west"
    assert [(a["person_id"], a["approve"]) for a in body["approvals"]] == [(str(people["alice"].pk), True)]


def test_answering_an_input_request_needs_an_answer(as_person, people, channel):
    approval = ask(channel, type="input_request", payload={"prompt": "Which budget code?"})
    client = as_person(people["alice"])
    html = html_of(client.get(request_page(approval)))
    assert "Which budget code?" in html and 'name="input"' in html
    response = client.post(request_page(approval), {"action": "answer", "input": "  "})
    assert response.status_code == 400 and "Write the answer" in html_of(response)
    client.post(request_page(approval), {"action": "answer", "input": "BC-42"})
    approval.refresh_from_db()
    assert (approval.status, approval.input_text) == ("approved", "BC-42")


def test_the_channel_owner_cannot_approve_on_route_approval(as_person, people, channel):
    approval = ask(channel)  # route approval: anyone but the owner
    client = as_person(people["owner"])
    html = html_of(client.get(request_page(approval)))
    approve = re.search(r'<button[^>]*id="action-approve"[^>]*>', html).group(0)
    assert "disabled" in approve
    assert "You own this agent: separation of duties" in html
    response = client.post(request_page(approval), {"action": "approve"})
    assert response.status_code == 403 and "you own this agent: separation of duties" in html_of(response)
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "pending"


def test_the_channel_owner_may_decide_on_route_approval_self(as_person, people, channel):
    approval = ask(channel, route="approval_self")
    client = as_person(people["owner"])
    client.post(request_page(approval), {"action": "approve", "comment": "mine to decide"})
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"


def test_rejecting_needs_a_comment_and_sends_it(as_person, people, channel):
    approval = ask(channel)
    client = as_person(people["alice"])
    response = client.post(request_page(approval), {"action": "reject", "comment": " "})
    assert response.status_code == 400 and "Say why you reject it" in html_of(response)
    client.post(request_page(approval), {"action": "reject", "comment": "Wrong registrar."})
    approval.refresh_from_db()
    assert (approval.status, approval.comments, approval.decided_by) == (
        "rejected",
        "Wrong registrar.",
        str(people["alice"].pk),
    )


def test_request_changes_needs_text_reaches_the_agent_and_can_be_withdrawn(as_person, people, channel):
    approval = ask(channel, tweak_allowed=True)
    client = as_person(people["alice"])
    assert client.post(request_page(approval), {"action": "request_changes"}).status_code == 400
    client.post(request_page(approval), {"action": "request_changes", "comment": "Use a smaller budget."})
    event = current_tweak_event(ApprovalRequest.objects.get(pk=approval.pk))
    assert (event["event"], event["request_text"]) == ("tweak_requested", "Use a smaller budget.")
    html = html_of(client.get(request_page(approval)))
    assert "Changes requested" in html and 'id="action-withdraw_tweak"' in html
    client.post(request_page(approval), {"action": "withdraw_tweak"})
    assert Tweak.objects.get(request=approval).status == "withdrawn"
    assert current_tweak_event(ApprovalRequest.objects.get(pk=approval.pk)) is None


def test_request_changes_is_disabled_when_the_agent_did_not_allow_it(as_person, people, channel):
    approval = ask(channel)
    html = html_of(as_person(people["alice"]).get(request_page(approval)))
    button = re.search(r'<button[^>]*id="action-request_changes"[^>]*>', html).group(0)
    assert "disabled" in button and "the agent did not allow change requests on this request" in html


def test_n_of_x_progress_counts_approvals_and_names_who_acted(as_person, people, channel):
    rule = {"type": "n_of_x", "required": 2, "approvers": ["alice", "bob", "ada"]}
    approval = ask(channel, approval_rule=rule)
    act(approval.channel.organization_id, approval.pk, people["alice"], "approve", comment="fine by me")
    client = as_person(people["bob"])
    html = html_of(client.get(request_page(approval)))
    assert "1 of 2 approvals" in html and "alice</strong> approved" in html and "fine by me" in html
    assert "1 of 2 approvals" in html_of(client.get(INBOX))
    alice_page = html_of(as_person(people["alice"]).get(request_page(approval)))
    assert "you have already voted on this request" in alice_page
    response = as_person(people["bob"]).post(request_page(approval), {"action": "approve"}, follow=True)
    assert "Approved. The agent receives the decision" in html_of(response)
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"


def test_sequential_progress_shows_the_current_step(as_person, people, channel):
    rule = {"type": "sequential", "steps": ["alice", "bob", {"role": "platform.admin"}]}
    approval = ask(channel, approval_rule=rule)
    act(approval.channel.organization_id, approval.pk, people["alice"], "approve")
    html = html_of(as_person(people["bob"]).get(request_page(approval)))
    assert "Step 2 of 3" in html and "request-step-done" in html and "request-step-current" in html
    admin_page = html_of(as_person(people["admin"]).get(request_page(approval)))
    assert "step 2 of 3 is for someone else" in admin_page


def test_a_request_decided_elsewhere_shows_who_decided_instead_of_deciding_twice(as_person, people, channel):
    approval = ask(channel)
    act(approval.channel.organization_id, approval.pk, people["alice"], "approve", comment="ok")
    client = as_person(people["bob"])
    response = client.post(request_page(approval), {"action": "reject", "comment": "no"})
    html = html_of(response)
    assert response.status_code == 409
    assert "already approved by alice at" in html and "Approved</strong> by <strong>alice" in html
    assert 'id="request-form"' not in html
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"


def test_a_tweak_answered_with_a_new_card_links_both_into_one_thread(as_person, people, channel):
    first = ask(channel, tweak_allowed=True, payload={"budget": 900})
    act(first.channel.organization_id, first.pk, people["alice"], "request_changes", comment="Lower the budget.")
    second = ask(channel, tweak_allowed=True, payload={"budget": 500}, parent_envelope_id=str(first.pk))
    html = html_of(as_person(people["alice"]).get(request_page(second)))
    assert request_page(first) in html and "(this card)" in html
    # The approver decides version 2: what was asked to change is on it, where they decide.
    answers = re.search(r'<div class="request-tweak request-answers" id="request-answers">(.*?)</div>', html, re.S)
    assert answers and "Lower the budget." in answers.group(1) and "alice" in answers.group(1)
    assert "payload.budget" in html and ">900<" in html and ">500<" in html
    parent_html = html_of(as_person(people["alice"]).get(request_page(first)))
    assert "Lower the budget." in parent_html and request_page(second) in parent_html
    assert cards_in(html_of(as_person(people["alice"]).get(INBOX))) == [str(second.pk)]


def test_bulk_acknowledge_acknowledges_the_fyi_cards_a_person_may(as_person, people, channel):
    first = ask(channel, type="informational", route="notify_manager", title="FYI one")
    second = ask(channel, route="notify_manager", title="FYI two")
    not_fyi = ask(channel, title="needs a decision")
    client = as_person(people["manager"])
    html = html_of(client.get(INBOX))
    assert 'id="inbox-bulk"' in html and html.count("data-fyi-select") == 2
    ids = [str(first.pk), str(second.pk), str(not_fyi.pk)]
    response = client.post("/admin/envelopes/approvalrequest/acknowledge/", {"ids": ids, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    statuses = dict(ApprovalRequest.objects.values_list("title", "status"))
    assert statuses == {"FYI one": "acknowledged", "FYI two": "acknowledged", "needs a decision": "pending"}
    messages = html_of(client.get(INBOX))
    assert "Acknowledged 2 cards." in messages and "Not acknowledged" in messages


def test_the_live_endpoint_changes_when_a_card_arrives_votes_or_closes(as_person, people, channel):
    client = as_person(people["alice"])
    live = "/admin/envelopes/approvalrequest/live/"
    before = client.get(live).json()["version"]
    rule = {"type": "n_of_x", "required": 2, "approvers": ["alice", "bob"]}
    approval = ask(channel, approval_rule=rule)
    arrived = client.get(live).json()["version"]
    assert arrived != before
    one = client.get(f"{live}?envelope={approval.pk}").json()
    act(approval.channel.organization_id, approval.pk, people["bob"], "approve")
    voted = client.get(f"{live}?envelope={approval.pk}").json()
    assert voted["version"] != one["version"] and voted["state"] == "awaiting_review"
    assert client.get(f"{live}?envelope=not-a-uuid").status_code == 404
    assert as_person(people["alice"]).get(INBOX).content.decode().count(f'data-version="{arrived}"') == 0
    html = html_of(client.get(INBOX))
    assert f'data-live-url="{live}"' in html


def test_the_envelope_review_url_of_a_request_opens_the_request_page(as_person, people, channel):
    approval = ask(channel)
    response = as_person(people["alice"]).get(f"/admin/envelopes/envelope/{approval.pk}/review/")
    assert response.status_code == 302 and response["Location"] == request_page(approval)


def test_another_organizations_request_does_not_exist_here(as_person, people, make_person):
    other = ensure_organization("globex", "Globex")
    from governance.services.people import create_person

    stranger = create_person(other, "gus", roles=[Role.GOVERNANCE_APPROVER])
    theirs = ask(open_channel(stranger, name="globex-bot")[0])
    client = as_person(people["admin"])
    assert str(theirs.pk) not in html_of(client.get(INBOX))
    response = client.get(request_page(theirs))
    assert response.status_code == 302  # "doesn't exist", like an unknown id
    assert client.post(request_page(theirs), {"action": "approve"}).status_code == 302
    assert ApprovalRequest.objects.get(pk=theirs.pk).status == "pending"


# --- the Agents page ---------------------------------------------------------------------------


def test_the_agents_page_lists_my_channels(as_person, people, channel):
    open_channel(people["alice"], name="alice-bot")
    ask(channel)
    html = html_of(as_person(people["owner"]).get("/agents"))
    assert "deploy-bot" in html and str(channel.pk) in html and "1 waiting" in html
    assert "alice-bot" not in html
    assert "New invite URL" in html


def test_a_new_invite_shows_its_token_once_with_a_register_command(as_person, people, settings):
    settings.PUBLIC_BASE_URL = "https://mandate.example"
    client = as_person(people["owner"])
    response = client.post("/agents", {"action": "invite"})
    html = html_of(response)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    token = re.search(r'<code id="invite-token">(mdi_[\w-]+)</code>', html).group(1)
    command = (
        "curl -X POST https://mandate.example/api/register-channel -H &#x27;Content-Type: application/json&#x27; "
        f"-d &#x27;{{&quot;invite_token&quot;: &quot;{token}&quot;}}&#x27;"
    )
    assert command in html
    assert "expires" in html
    assert token not in html_of(client.get("/agents"))  # shown once
    channel, _key, _secret = register_channel(token, name="fresh-bot")
    assert channel.owner == people["owner"]
    assert "fresh-bot" in html_of(client.get("/agents"))
    assert AdminAuditRecord.objects.filter(action="channel.invite_created", actor_id="olivia").exists()


def test_rotating_a_key_shows_the_new_key_once_and_the_old_one_stops_working(as_person, people):
    channel, old_key = open_channel(people["owner"])
    client = as_person(people["owner"])
    html = html_of(client.post("/agents", {"action": "rotate", "channel": str(channel.pk)}))
    new_key = re.search(r'<code id="channel-key">(mdc_[\w-]+)</code>', html).group(1)
    assert authenticate_channel_key(old_key) is None
    assert authenticate_channel_key(new_key) == channel
    channel.refresh_from_db()
    assert channel.key_rotated_at is not None
    assert AdminAuditRecord.objects.filter(action="channel.key_rotated", target_id=str(channel.pk)).exists()


def test_revoking_a_channel_turns_its_key_off(as_person, people):
    channel, key = open_channel(people["owner"])
    response = as_person(people["owner"]).post("/agents", {"action": "revoke", "channel": str(channel.pk)}, follow=True)
    assert "is revoked" in html_of(response)
    assert Channel.objects.get(pk=channel.pk).status == "revoked" and authenticate_channel_key(key) is None
    again = as_person(people["owner"]).post("/agents", {"action": "rotate", "channel": str(channel.pk)}, follow=True)
    assert "a revoked channel stays revoked" in html_of(again)


def test_a_malformed_or_unknown_channel_id_changes_nothing(as_person, people):
    channel, key = open_channel(people["owner"])
    client = as_person(people["owner"])
    for channel_id in ("not-a-uuid", "", "00000000-0000-0000-0000-000000000000"):
        response = client.post("/agents", {"action": "revoke", "channel": channel_id}, follow=True)
        assert "that channel or action is unknown" in html_of(response)
    assert Channel.objects.get(pk=channel.pk).status == "active" and authenticate_channel_key(key) == channel


def test_only_owners_and_platform_admins_manage_a_channel(as_person, people):
    channel, key = open_channel(people["owner"])
    assert (
        as_person(people["alice"]).post("/agents", {"action": "revoke", "channel": str(channel.pk)}).status_code == 403
    )
    assert Channel.objects.get(pk=channel.pk).status == "active"
    admin_page = html_of(as_person(people["admin"]).get("/agents"))
    assert "Other channels in Acme" in admin_page and "deploy-bot" in admin_page
    as_person(people["admin"]).post("/agents", {"action": "revoke", "channel": str(channel.pk)})
    assert Channel.objects.get(pk=channel.pk).status == "revoked"


def test_the_agents_page_is_for_signed_in_staff(client, make_person):
    assert client.get("/agents").status_code == 302
    client.force_login(make_person(staff=False, username="outsider"))
    response = client.get("/agents")
    assert response.status_code in (302, 403)


# --- the channel admin pages ---------------------------------------------------------------------


def test_channel_pages_are_read_only_and_scoped_to_the_owner(as_person, people, channel):
    open_channel(people["alice"], name="alice-bot")
    client = as_person(people["owner"])
    listing = html_of(client.get("/admin/envelopes/channel/"))
    assert "deploy-bot" in listing and "alice-bot" not in listing
    detail = client.get(f"/admin/envelopes/channel/{channel.pk}/change/")
    assert detail.status_code == 200
    assert channel.key_hash not in html_of(detail) and "webhook_secret" not in html_of(detail)
    assert "Agents page" in html_of(detail)
    assert client.get("/admin/envelopes/channel/add/").status_code == 403
    assert "alice-bot" in html_of(as_person(people["admin"]).get("/admin/envelopes/channel/"))
    invites = html_of(as_person(people["owner"]).get("/admin/envelopes/channelinvite/"))
    assert "used" in invites


def test_the_approval_request_list_links_to_the_request_pages(as_person, people, channel):
    approval = ask(channel)
    html = html_of(as_person(people["alice"]).get("/admin/envelopes/approvalrequest/"))
    assert request_page(approval) in html and "Transfer example.com" in html
