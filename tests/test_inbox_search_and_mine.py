"""The inbox's search box, the cost of "mine", and the "you can decide / why not" line on
escalation cards (Django's test client and the inbox service)."""

import re

import pytest
from django.db import connection
from django.test.client import RequestFactory
from django.test.utils import CaptureQueriesContext

from envelopes.inbox.views import inbox_context
from governance.choices import Role
from governance.models import Team
from governance.services.people import add_team_member, create_person, ensure_organization
from tests.test_inbox_requests import INBOX, ask, cards_in, html_of, open_channel
from tests.test_reviews import submit as evaluate

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_person):
    manager = make_person(username="maria")
    return {
        "owner": make_person(roles=[Role.GOVERNANCE_APPROVER], username="olivia", manager=manager),
        "alice": make_person(roles=[Role.GOVERNANCE_APPROVER], username="alice"),
        "bob": make_person(roles=[Role.GOVERNANCE_APPROVER], username="bob"),
        "reviewer": make_person(roles=[Role.GOVERNANCE_REVIEWER], username="rita"),
        "admin": make_person(roles=[Role.PLATFORM_ADMIN], username="ada"),
        "manager": manager,
    }


def signed_in(client, person):
    client.force_login(person)
    return client


# --- search ------------------------------------------------------------------------------------


def test_search_finds_cards_by_title_summary_agent_channel_and_request_id(client, people, demo):
    deploys = open_channel(people["owner"], name="deploy-bot")[0]
    billing = open_channel(people["owner"], name="billing-bot", agent_id="agent-payments-prod")[0]
    domain = ask(deploys, title="Transfer example.com to Cloudflare", summary="Move the domain.")
    refund = ask(billing, title="Refund order 1142", summary="The customer was charged twice.")
    restart = ask(deploys, title="Restart the API", summary="Memory keeps growing.")
    escalation = evaluate(demo, confidence=0.4)
    client = signed_in(client, people["admin"])

    def found(q):
        return set(cards_in(html_of(client.get(INBOX, {"q": q}))))

    assert found("cloudflare") == {str(domain.pk)}  # title, any case
    assert found("charged twice") == {str(refund.pk)}  # summary: every word must match
    assert found("charged never") == set()
    assert found("billing") == {str(refund.pk)}  # the channel's name
    assert found("payments-prod") == {str(refund.pk), str(escalation.pk)}  # the agent
    assert found(str(restart.pk)) == {str(restart.pk)}  # the request id
    assert found(str(restart.pk)[:8]) == {str(restart.pk)}  # its first digits, as people quote it
    assert found(escalation.request_id) == {str(escalation.pk)}  # an evaluation's request id
    assert found("confidence below") == {str(escalation.pk)}  # an escalation's title: its reason in words
    assert found("surf-payment") == {str(escalation.pk)}  # its surface
    assert found("100%_off") == set()  # LIKE's wildcards are plain characters
    assert found("   ") == found("")  # blank is no search
    assert len(found("")) == 4


def test_the_search_box_keeps_its_words_in_the_links_and_clears_with_the_filters(client, people):
    channel = open_channel(people["owner"])[0]
    ask(channel, title="Rotate the database password")
    ask(channel, title="Scale the web tier")
    html = html_of(signed_in(client, people["alice"]).get(INBOX, {"q": "database", "sort": "newest"}))
    assert len(cards_in(html)) == 1
    assert re.search(r'<input type="search" name="q" value="database"', html)
    assert 'href="?scope=mine&amp;q=database&amp;sort=newest"' in html  # a tab keeps the search
    assert '<a class="inbox-clear" href="?">Clear filters</a>' in html
    overlong = html_of(client.get(INBOX, {"q": "x" * 5000}))  # clipped, never an error
    assert 'value="' + "x" * 200 + '"' in overlong


# --- "mine" costs the same for a page of 3 cards as for 30 ---------------------------------------


def mine_queries(slug: str, cards: int) -> tuple[int, int]:
    """A new organization whose inbox holds ``cards`` requests of every route and rule kind
    that asks about teams, votes and roles; the queries of alice's ``?scope=mine`` page and
    the cards on it."""
    organization = ensure_organization(slug, slug)
    manager = create_person(organization, f"{slug}-maria")
    owner = create_person(organization, f"{slug}-olivia", roles=[Role.GOVERNANCE_APPROVER], manager=manager)
    alice = create_person(organization, f"{slug}-alice", roles=[Role.GOVERNANCE_APPROVER])
    bob = create_person(organization, f"{slug}-bob", roles=[Role.GOVERNANCE_APPROVER])
    team = Team.objects.create(organization=organization, name="Platform")
    add_team_member(team, alice, owner=True)
    channel = open_channel(owner)[0]
    shapes = [
        {},
        {"route": "approve_team", "team_id": str(team.pk)},
        {"route": "notify_team_owner", "team_id": str(team.pk), "type": "informational"},
        {"route": "approve_manager"},
        {"approval_rule": {"type": "n_of_x", "required": 2, "approvers": [{"team": str(team.pk)}, str(bob.pk)]}},
        {"approval_rule": {"type": "sequential", "steps": [[str(bob.pk)], [{"role": "governance.approver"}]]}},
    ]
    for n in range(cards):
        ask(channel, title=f"request {n}", **shapes[n % len(shapes)])
    request = RequestFactory().get(INBOX, {"scope": "mine"})
    request.user = type(alice).objects.get(pk=alice.pk)  # fresh, as a request loads it
    with CaptureQueriesContext(connection) as queries:
        inbox = inbox_context(request)["inbox"]
    return len(queries), len(inbox["cards"])


def test_mine_reads_in_the_same_number_of_queries_for_3_and_30_cards(db):
    few, few_cards = mine_queries("few", 3)
    many, many_cards = mine_queries("many", 30)
    assert few_cards == 3  # the plain approval, the team route, the team owner's FYI
    # Of 30 (5 of each shape): the plain approval, the team route, the team owner's FYI and
    # the n_of_x rule naming her team; not the manager's route, nor bob's first step.
    assert many_cards == 20
    assert many == few, f"{few} queries for 3 cards, {many} for 30"


# --- escalation cards say whether you can decide ---------------------------------------------------


def test_an_escalation_card_says_you_can_decide_to_a_reviewer(client, people, demo):
    escalation = evaluate(demo, confidence=0.4)
    html = html_of(signed_in(client, people["reviewer"]).get(INBOX))
    card = html[html.index(f'data-card-id="{escalation.pk}"') :]
    card = card[: card.index("</article>")]
    assert '<span class="inbox-you inbox-you-act">you can decide</span>' in card
    assert 'data-may-act="true"' in html


def test_an_escalation_card_says_why_an_approver_cannot_decide_it_in_the_cores_words(client, people, demo):
    from envelopes.evaluation.reviews import EvaluationRules
    from envelopes.services.decide import Actor, Decision

    escalation = evaluate(demo, confidence=0.4)
    refused = EvaluationRules().refusal(
        escalation, Actor.of_person(people["alice"]), Decision("approve")
    )  # the core's refusal, as POST /v1/reviews meets it
    html = html_of(signed_in(client, people["alice"]).get(INBOX))
    card = html[html.index(f'data-card-id="{escalation.pk}"') :]
    card = card[: card.index("</article>")]
    assert f'<span class="inbox-you">{refused.message[0].upper()}{refused.message[1:]}</span>' in card
    assert "Deciding escalations needs platform.admin or governance.reviewer" in card
    assert "you can decide" not in card
