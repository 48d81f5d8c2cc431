"""Who may decide an agent's request and what each decision does, through the services
(``submit_request`` and ``act``): routes and separation of duties, approval rules, request
types, approver entries, tweak round trips, decided-once, the evidence chain and the
decision payload."""

import json
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from envelopes.choices import EnvelopeState, RequestStatus, TweakStatus
from envelopes.models import Approval, ApprovalRequest, Delivery
from envelopes.requests.channels import create_invite, register_channel
from envelopes.requests.decisions import act, current_tweak_event, decision_payload
from envelopes.requests.eligibility import refusal
from envelopes.requests.submissions import submit_request
from evidence.models import AuditEvent
from evidence.services.verification import verify_chain
from governance.api.errors import APIError, api_error
from governance.choices import Role
from governance.errors import DomainError, Invalid, NotFound
from governance.models import Team
from governance.services.people import add_team_member

pytestmark = pytest.mark.django_db


# --- the cast ----------------------------------------------------------------------------


@pytest.fixture
def manager(make_person):
    return make_person(username="manager", email="manager@example.com")


@pytest.fixture
def owner(make_person, manager):
    # The owner is an approver too: separation of duties, not a missing role, must stop them.
    return make_person(roles=(Role.GOVERNANCE_APPROVER,), username="owner", manager=manager)


@pytest.fixture
def channel(owner):
    _, token = create_invite(owner)
    channel, _, _ = register_channel(token, name="deploy bot")
    return channel


@pytest.fixture
def approvers(make_person):
    return [make_person(roles=(Role.GOVERNANCE_APPROVER,), username=f"approver{i}") for i in (1, 2, 3)]


@pytest.fixture
def approver(approvers):
    return approvers[0]


@pytest.fixture
def admin(make_person):
    return make_person(roles=(Role.PLATFORM_ADMIN,), username="admin")


@pytest.fixture
def outsider(make_person):
    return make_person(username="outsider")


@pytest.fixture
def team(organization, make_person):
    team = Team.objects.create(organization=organization, name="ops")
    add_team_member(team, make_person(username="member"))
    add_team_member(team, make_person(username="lead", email="lead@example.com"), owner=True)
    return team


def member(team, *, owner=False):
    return team.memberships.get(is_owner=owner).person


# --- helpers -------------------------------------------------------------------------------


def submit(channel, **fields) -> ApprovalRequest:
    body = {"type": "approval_request", "title": "Transfer example.com", "summary": "to Cloudflare", **fields}
    return submit_request(channel, body, json.dumps(body))


def decide(request, person, action="approve", **options) -> ApprovalRequest:
    return act(request.channel.organization_id, request.pk, person, action, **options)


def refused(request, person, action="approve", **options) -> APIError:
    """The refusal as the API edge answers it."""
    with pytest.raises(DomainError) as caught:
        decide(request, person, action, **options)
    return api_error(caught.value)


def reload(request) -> ApprovalRequest:
    return ApprovalRequest.objects.select_related("envelope", "channel").get(pk=request.pk)


def chain(request) -> list[str]:
    return list(
        AuditEvent.objects.filter(chain_id=str(request.pk)).order_by("sequence_no").values_list("event_type", flat=True)
    )


def assert_evidence_intact(request) -> None:
    envelope = reload(request).envelope
    verdict = verify_chain(str(envelope.pk), expected_final_hash=envelope.final_event_hash)
    assert verdict.valid, verdict
    assert verdict.chain_length == len(envelope.audit_event_ids)


# --- routes and separation of duties --------------------------------------------------------


def test_a_log_only_request_is_closed_at_once_as_acknowledged_and_nobody_can_act(channel, approver):
    request = submit(channel, route="log_only")
    request = reload(request)
    assert (request.status, request.decided_by) == (RequestStatus.ACKNOWLEDGED, "system")
    assert request.envelope.state == EnvelopeState.CLOSED and request.envelope.closed_at is not None
    assert chain(request) == ["ENVELOPE_CREATED", "REQUEST_ROUTED", "ENVELOPE_CLOSED"]
    error = refused(request, approver, "acknowledge")
    assert error.status_code == 409
    assert_evidence_intact(request)


def test_route_approval_refuses_the_channel_owner_separation_of_duties(channel, owner):
    request = submit(channel)
    error = refused(request, owner)
    assert (error.status_code, error.error) == (403, "you own this agent: separation of duties")
    assert reload(request).status == RequestStatus.PENDING


def test_route_approval_refuses_a_person_without_an_approver_role(channel, outsider):
    error = refused(submit(channel), outsider)
    assert (error.status_code, error.error) == (403, "this route does not give you a say on this request")


@pytest.mark.parametrize("who", ["approver", "admin"])
def test_route_approval_lets_any_other_approver_decide(channel, request, who):
    person = request.getfixturevalue(who)
    decided = decide(submit(channel), person)
    assert (decided.status, decided.decided_by) == (RequestStatus.APPROVED, str(person.pk))
    assert_evidence_intact(decided)


def test_route_approval_self_lets_the_owner_decide(channel, owner, outsider):
    request = submit(channel, route="approval_self")
    assert refused(request, outsider).status_code == 403
    decided = decide(request, owner)
    assert (decided.status, decided.decided_by) == (RequestStatus.APPROVED, str(owner.pk))
    assert_evidence_intact(decided)


def test_route_approve_manager_lets_only_the_owners_manager_decide(channel, owner, manager, approver, admin):
    request = submit(channel, route="approve_manager")
    for person in (owner, approver, admin):
        assert refused(request, person).status_code == 403
    decided = decide(request, manager, "reject", comment="not this quarter")
    assert (decided.status, decided.decided_by, decided.comments) == (
        RequestStatus.REJECTED,
        str(manager.pk),
        "not this quarter",
    )
    assert_evidence_intact(decided)


def test_route_approve_team_lets_only_members_of_the_team_decide(channel, team, approver, admin):
    request = submit(channel, route="approve_team", team_id=str(team.pk))
    for person in (approver, admin):
        assert refused(request, person).status_code == 403
    decided = decide(request, member(team))
    assert decided.status == RequestStatus.APPROVED
    assert_evidence_intact(decided)


def test_route_approve_team_needs_a_team_id(channel):
    with pytest.raises(Invalid) as caught:
        submit(channel, route="approve_team")
    assert caught.value.error == "team_id: is required"


def test_route_approve_any_admin_lets_only_platform_admins_decide(channel, approver, manager, admin):
    request = submit(channel, route="approve_any_admin")
    for person in (approver, manager):
        assert refused(request, person).status_code == 403
    assert decide(request, admin).status == RequestStatus.APPROVED


def test_notify_manager_is_an_fyi_card_the_manager_can_only_acknowledge_plus_an_email(
    channel, manager, approver, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with django_capture_on_commit_callbacks(execute=True):
        request = submit(channel, route="notify_manager", title="Rotated the TLS cert")
    assert [m.to for m in mail.outbox] == [["manager@example.com"]]
    assert mail.outbox[0].subject == "[Mandate] FYI: Rotated the TLS cert"
    assert refused(request, approver, "acknowledge").status_code == 403
    error = refused(request, manager, "approve")
    assert (error.status_code, error.error) == (403, "this card is for information: acknowledge it")
    decided = decide(request, manager, "acknowledge")
    assert (decided.status, decided.decided_by) == (RequestStatus.ACKNOWLEDGED, str(manager.pk))
    assert_evidence_intact(decided)


def test_notify_team_owner_is_an_fyi_card_for_the_team_owners_plus_an_email(
    channel, team, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with django_capture_on_commit_callbacks(execute=True):
        request = submit(channel, route="notify_team_owner", team_id=str(team.pk))
    assert [m.to for m in mail.outbox] == [["lead@example.com"]]
    assert refused(request, member(team), "acknowledge").status_code == 403
    assert refused(request, member(team, owner=True), "reject").status_code == 403
    assert decide(request, member(team, owner=True), "acknowledge").status == RequestStatus.ACKNOWLEDGED


def test_a_person_of_another_organization_is_never_eligible(channel):
    from governance.services.people import create_person, ensure_organization

    stranger = create_person(ensure_organization("other", "Other"), "stranger", roles=(Role.PLATFORM_ADMIN,))
    request = submit(channel)
    assert refusal(request, stranger).code == "not_eligible"
    with pytest.raises(NotFound):
        act(stranger.organization_id, request.pk, stranger, "approve")


# --- decided once ------------------------------------------------------------------------------


def test_a_decided_request_cannot_be_decided_again_409_says_who_and_when(channel, approvers):
    first, second = approvers[:2]
    decided = decide(submit(channel), first, comment="ok")
    error = refused(decided, second, "reject")
    assert error.status_code == 409
    assert error.error == f"already approved by {first.pk} at {decided.decision_time.isoformat()}"
    assert reload(decided).status == RequestStatus.APPROVED
    assert chain(decided).count("DECISION_RECORDED") == 1


# --- approval rules ------------------------------------------------------------------------------


def test_single_rule_the_first_eligible_decision_decides(channel, approver):
    decided = decide(submit(channel, approval_rule={"type": "single"}), approver)
    assert decided.status == RequestStatus.APPROVED
    assert chain(decided)[-2:] == ["DECISION_RECORDED", "ENVELOPE_CLOSED"]


def test_sequential_steps_complete_in_order_and_refuse_the_wrong_step(channel, approvers, team, admin):
    first, second, _ = approvers
    rule = {"type": "sequential", "steps": [str(first.pk), [{"team": str(team.pk)}], {"role": "admin"}]}
    request = submit(channel, approval_rule=rule)
    error = refused(request, member(team))
    assert (error.status_code, error.error) == (403, "step 1 of 3 is for someone else")
    assert refused(request, second).status_code == 403

    assert decide(request, first).status == RequestStatus.PENDING
    assert refused(request, admin).error == "step 2 of 3 is for someone else"
    assert decide(request, member(team)).status == RequestStatus.PENDING
    decided = decide(request, admin)
    assert decided.status == RequestStatus.APPROVED
    assert [a.step for a in Approval.objects.filter(request=request)] == [0, 1, 2]
    assert chain(decided).count("APPROVAL_RECORDED") == 2
    assert_evidence_intact(decided)


def test_sequential_a_person_named_in_two_steps_votes_once(channel, approvers):
    first, second, _ = approvers
    rule = {"type": "sequential", "steps": [[str(first.pk)], [str(first.pk), str(second.pk)]]}
    request = submit(channel, approval_rule=rule)
    decide(request, first)
    error = refused(request, first)
    assert (error.status_code, error.error) == (403, "you have already voted on this request")
    assert decide(request, second).status == RequestStatus.APPROVED


def test_sequential_a_rejection_at_any_step_rejects(channel, approvers):
    first, second, _ = approvers
    request = submit(channel, approval_rule={"type": "sequential", "steps": [str(first.pk), str(second.pk)]})
    decide(request, first)
    decided = decide(request, second, "reject", comment="no")
    assert (decided.status, decided.decided_by) == (RequestStatus.REJECTED, str(second.pk))
    assert_evidence_intact(decided)


def n_of_x(people, required=2) -> dict:
    return {"type": "n_of_x", "required": required, "approvers": [str(p.pk) for p in people]}


def test_n_of_x_needs_n_distinct_approvers_and_refuses_a_duplicate_vote(channel, approvers, outsider, admin):
    first, second, _ = approvers
    request = submit(channel, approval_rule=n_of_x(approvers))
    assert decide(request, first).status == RequestStatus.PENDING
    error = refused(request, first)
    assert (error.status_code, error.error) == (403, "you have already voted on this request")
    assert refused(request, admin).error == "you are not one of this request's approvers"
    assert refused(request, outsider).status_code == 403
    decided = decide(request, second)
    assert (decided.status, decided.decided_by) == (RequestStatus.APPROVED, str(second.pk))
    closing = AuditEvent.objects.get(chain_id=str(request.pk), event_type="DECISION_RECORDED")
    assert closing.payload["approvals"] == 2
    assert_evidence_intact(decided)


def test_n_of_x_a_rejection_ends_it_only_once_approvals_can_no_longer_reach_n(channel, approvers):
    first, second, third = approvers
    request = submit(channel, approval_rule=n_of_x(approvers))  # 2 of 3
    assert decide(request, first, "reject").status == RequestStatus.PENDING  # 2 and 3 may still approve
    assert chain(request)[-1] == "REJECTION_RECORDED"
    decided = decide(request, second, "reject")  # only 3 is left: 1 < 2
    assert (decided.status, decided.decided_by) == (RequestStatus.REJECTED, str(second.pk))
    assert refused(request, third).status_code == 409
    assert_evidence_intact(decided)


def test_n_of_x_a_rejection_after_an_approval_waits_for_the_last_voter(channel, approvers):
    first, second, third = approvers
    request = submit(channel, approval_rule=n_of_x(approvers))
    decide(request, first)
    assert decide(request, second, "reject").status == RequestStatus.PENDING  # 1 + (3) can reach 2
    assert decide(request, third, "reject").status == RequestStatus.REJECTED


def test_n_of_x_by_role_counts_every_holder_except_the_owner(channel, approvers, owner):
    # approver1..3 and the owner hold governance.approver; the owner may not decide (route approval).
    first, second, third = approvers
    request = submit(channel, approval_rule={"type": "n_of_x", "required": 2, "approvers": [{"role": "approver"}]})
    assert decide(request, first, "reject").status == RequestStatus.PENDING
    assert decide(request, second, "reject").status == RequestStatus.REJECTED


def test_n_of_x_by_team_and_implied_role_counts_members_and_role_holders(channel, team, admin, approver):
    # {"role": "platform.viewer"} is held by the admin (platform.admin implies it).
    rule = {"type": "n_of_x", "required": 2, "approvers": [{"team": str(team.pk)}, {"role": "platform.viewer"}]}
    request = submit(channel, approval_rule=rule)
    assert refused(request, approver).status_code == 403
    assert decide(request, member(team), "reject").status == RequestStatus.PENDING  # lead + admin remain
    assert decide(request, member(team, owner=True)).status == RequestStatus.PENDING
    assert decide(request, admin).status == RequestStatus.APPROVED


def test_n_of_x_rejection_check_does_not_grow_with_the_organization(channel, approvers, make_person):
    counts = []
    for extra in (0, 15):
        for _ in range(extra):
            make_person(roles=(Role.GOVERNANCE_APPROVER,))
        rule = {"type": "n_of_x", "required": 2, "approvers": [{"role": "approver"}]}
        request = submit(channel, approval_rule=rule)
        with CaptureQueriesContext(connection) as queries:
            decide(request, approvers[0], "reject")
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- request types ----------------------------------------------------------------------------


CHOICES = {"options": [{"id": "a", "label": "Alpha"}, {"id": "b", "label": "Beta"}]}


def test_a_choice_is_decided_by_choosing_one_of_its_options(channel, approver):
    request = submit(channel, type="choice", payload=CHOICES)
    error = refused(request, approver, "choose", choice="c")
    assert (error.status_code, error.error) == (400, "choice: not one of the request's options")
    assert refused(request, approver, "approve").status_code == 400
    assert reload(request).status == RequestStatus.PENDING
    decided = decide(request, approver, "choose", choice="Beta")
    assert (decided.status, decided.choice) == (RequestStatus.APPROVED, "b")
    assert decision_payload(decided)["choice"] == "b"
    assert_evidence_intact(decided)


def test_an_input_request_is_decided_by_an_answer(channel, approver):
    request = submit(channel, type="input_request", title="Which region?")
    assert refused(request, approver, "answer", input_text="  ").status_code == 400
    assert refused(request, approver, "choose", choice="x").status_code == 400
    decided = decide(request, approver, "answer", input_text=" eu-west-1 ")
    assert (decided.status, decided.input_text) == (RequestStatus.APPROVED, "eu-west-1")
    assert decision_payload(decided)["input"] == "eu-west-1"
    assert_evidence_intact(decided)


def test_an_informational_request_is_acknowledged_not_approved(channel, approver):
    request = submit(channel, type="informational")
    assert refused(request, approver, "approve").error == "this card is for information: acknowledge it"
    decided = decide(request, approver, "acknowledge", comment="seen")
    assert (decided.status, decided.comments) == (RequestStatus.ACKNOWLEDGED, "seen")
    assert_evidence_intact(decided)


def test_acknowledging_a_request_that_needs_a_decision_is_refused(channel, approver):
    error = refused(submit(channel), approver, "acknowledge")
    assert (error.status_code, error.error) == (403, "this request needs a decision, not an acknowledgement")


def test_a_spend_approval_is_approved_with_its_amount_in_the_snapshot(channel, approver):
    request = submit(channel, type="spend_approval", payload={"amount": 480.5, "currency": "EUR"})
    decided = decide(request, approver)
    assert decided.status == RequestStatus.APPROVED
    assert decision_payload(decided)["envelope_snapshot"]["payload"] == {"amount": 480.5, "currency": "EUR"}


def test_an_unknown_action_is_400(channel, approver):
    assert refused(submit(channel), approver, "bless").status_code == 400


# --- approver entries ---------------------------------------------------------------------------


def test_every_approver_entry_form_is_normalized(channel, approvers, team):
    first, second, third = approvers
    second.email = "second@example.com"
    second.save(update_fields=["email"])
    entries = [
        {"user": str(first.pk)},
        {"user": "SECOND@example.com"},
        {"user": third.username},
        {"team": str(team.pk)},
        {"role": "approver"},
        str(first.pk),
    ]
    request = submit(channel, approval_rule={"type": "n_of_x", "required": 2, "approvers": entries})
    assert request.approval_rule["approvers"] == [
        {"user": str(first.pk)},
        {"user": str(second.pk)},
        {"user": str(third.pk)},
        {"team": str(team.pk)},
        {"role": "governance.approver"},
        {"user": str(first.pk)},
    ]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"user": "nobody@example.com"}, "no person 'nobody@example.com' in this organization"),
        ({"user": str(uuid.UUID(int=7))}, f"no person '{uuid.UUID(int=7)}' in this organization"),
        (str(uuid.UUID(int=7)), f"no person '{uuid.UUID(int=7)}' in this organization"),
        ({"team": str(uuid.UUID(int=7))}, f"no team '{uuid.UUID(int=7)}' in this organization"),
        ({"team": "ops"}, "no team 'ops' in this organization"),
        ({"role": "wizard"}, "unknown role 'wizard'"),
        ({"group": "ops"}, "unknown approver kind 'group'"),
        ({"user": 5}, "user must be a non-empty string"),
        ({}, 'each approver is a user id, or one of {"user": ...}, {"team": ...}, {"role": ...}'),
        (
            {"user": "a", "team": "b"},
            'each approver is a user id, or one of {"user": ...}, {"team": ...}, {"role": ...}',
        ),
    ],
)
def test_an_unknown_approver_entry_is_400_naming_it(channel, approver, entry, message):
    rule = {"type": "n_of_x", "required": 1, "approvers": [entry, str(approver.pk)]}
    with pytest.raises(Invalid) as caught:
        submit(channel, approval_rule=rule)
    assert caught.value.error == f"approval_rule.approvers[0]: {message}"


def test_an_unknown_approver_in_a_sequential_step_is_400_naming_the_step(channel, approver):
    rule = {"type": "sequential", "steps": [str(approver.pk), [{"role": "wizard"}]]}
    with pytest.raises(Invalid) as caught:
        submit(channel, approval_rule=rule)
    assert caught.value.error == "approval_rule.steps[1]: unknown role 'wizard'"


# --- tweaks -------------------------------------------------------------------------------------


def test_a_tweak_round_trip_links_the_original_and_its_successor(channel, approver, settings):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = True
    webhook = {"return_mode": "both", "return_webhook": "http://127.0.0.1:9/hook", "tweak_allowed": True}
    original = submit(channel, **webhook)

    decide(original, approver, "request_changes", comment="Reduce the spend cap to $500")
    event = current_tweak_event(reload(original))
    tweak = original.tweaks.get()
    assert event == {
        "event": "tweak_requested",
        "request_id": str(original.pk),
        "tweak_id": str(tweak.pk),
        "request_text": "Reduce the spend cap to $500",
        "requested_by": str(approver.pk),
        "envelope_snapshot": json.loads(original.envelope.submitted_raw),
    }
    assert refused(original, approver, "request_changes", comment="again").status_code == 409

    decide(original, approver, "withdraw_tweak")
    tweak.refresh_from_db()
    assert tweak.status == TweakStatus.WITHDRAWN and current_tweak_event(reload(original)) is None
    assert refused(original, approver, "withdraw_tweak").status_code == 409

    decide(original, approver, "request_changes", comment="Use $500")
    successor = submit(channel, **webhook, parent_envelope_id=str(original.pk))
    resolved = original.tweaks.get(status=TweakStatus.RESOLVED)
    assert resolved.resolved_by == successor and successor.parent_id == original.pk
    original = reload(original)
    assert (original.status, original.decided_by) == (RequestStatus.EXPIRED, "system")
    assert original.comments == f"superseded by request {successor.pk}"
    assert reload(successor).status == RequestStatus.PENDING
    assert chain(original)[-6:] == [
        "TWEAK_REQUESTED",
        "TWEAK_WITHDRAWN",
        "TWEAK_REQUESTED",
        "TWEAK_RESOLVED",
        "DECISION_RECORDED",
        "ENVELOPE_CLOSED",
    ]
    # The agent heard each tweak event by webhook; its own superseding move sends nothing.
    events = list(Delivery.objects.filter(request=original).order_by("created_at").values_list("event", flat=True))
    assert events == ["tweak_requested", "tweak_withdrawn", "tweak_requested"]
    assert_evidence_intact(original)
    assert_evidence_intact(successor)


def test_request_changes_is_refused_unless_the_agent_allowed_tweaks(channel, approver):
    error = refused(submit(channel), approver, "request_changes", comment="smaller")
    assert (error.status_code, error.error) == (403, "the agent did not allow change requests on this request")


def test_request_changes_needs_text(channel, approver):
    error = refused(submit(channel, tweak_allowed=True), approver, "request_changes", comment=" ")
    assert (error.status_code, error.error) == (400, "request_text: say what should change")


def test_the_owner_cannot_request_changes_on_route_approval(channel, owner):
    assert refused(submit(channel, tweak_allowed=True), owner, "request_changes", comment="x").status_code == 403


# --- what the agent receives ----------------------------------------------------------------------


def test_the_decision_payload_carries_every_field_the_agent_reads(channel, approver):
    expires = (timezone.now() + timedelta(hours=1)).isoformat()
    request = submit(channel, type="choice", payload=CHOICES, expires_at=expires, on_timeout="expire")
    decided = decide(request, approver, "choose", choice="a", comment="Alpha it is")
    body = decision_payload(reload(decided))
    assert set(body) == {
        "request_id",
        "status",
        "approved_by",
        "decision_time",
        "comments",
        "choice",
        "envelope_snapshot",
    }
    assert body["request_id"] == str(request.pk)
    assert (body["status"], body["approved_by"], body["comments"], body["choice"]) == (
        "approved",
        str(approver.pk),
        "Alpha it is",
        "a",
    )
    assert body["decision_time"].endswith("Z")
    assert body["envelope_snapshot"] == json.loads(request.envelope.submitted_raw)


def test_a_plain_approval_payload_has_neither_choice_nor_input(channel, approver):
    body = decision_payload(decide(submit(channel), approver))
    assert "choice" not in body and "input" not in body


def test_a_decision_is_queued_for_the_webhook_in_the_same_transaction(channel, approver, settings):
    settings.MANDATE_WEBHOOK_ALLOW_PRIVATE = True
    request = submit(channel, return_mode="webhook", return_webhook="http://127.0.0.1:9/hook")
    decided = decide(request, approver, "reject", comment="no")
    delivery = Delivery.objects.get(request=request)
    assert delivery.event == "decision"
    assert json.loads(delivery.body) == decision_payload(reload(decided))
