"""Version state and recovery analysis of surfaces and profiles (controlplane.services.recovery)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.models import Grant, Profile, Surface
from controlplane.services import recovery
from governance.services.people import ensure_organization
from tests import factories

pytestmark = pytest.mark.django_db

NOW = timezone.now()
PAST = NOW - timedelta(days=2)
FUTURE = NOW + timedelta(days=2)


def surface_state(org, key="surf-loan-approval"):
    return recovery.surface_recovery(Surface.objects.filter(organization=org, key=key), now=NOW)


def profile_state(org, key="prof-loans-standard"):
    return recovery.profile_recovery(
        Profile.objects.filter(organization=org, key=key), Grant.objects.filter(organization=org), now=NOW
    )


# --- latest and active versions -------------------------------------------------------------


def test_latest_versions_picks_the_highest_version_of_each_id_in_one_query(organization, django_assert_num_queries):
    for key, top in (("surf-a", 3), ("surf-b", 1), ("surf-c", 2)):
        for version in range(1, top + 1):
            factories.surface(organization, key=key, version=version)

    with django_assert_num_queries(1):
        rows = list(recovery.latest_versions(Surface.objects.filter(organization=organization)).order_by("key"))

    assert [(s.key, s.version) for s in rows] == [("surf-a", 3), ("surf-b", 1), ("surf-c", 2)]


def test_latest_versions_is_per_organization(organization):
    other = ensure_organization("globex", "Globex")
    factories.surface(organization, key="surf-a", version=1)
    for version in (1, 2, 3):
        factories.surface(other, key="surf-a", version=version)

    rows = recovery.latest_versions(Surface.objects.filter(organization=organization))

    assert [(s.key, s.version) for s in rows] == [("surf-a", 1)]


def test_active_version_is_the_newest_active_version_whose_window_covers_now(organization):
    factories.surface(organization, version=1, status="active", effective_from=PAST)
    factories.surface(organization, version=2, status="active", effective_from=PAST)
    factories.surface(organization, version=3, status="active", effective_from=FUTURE)
    factories.surface(organization, version=4, status="review")

    active = recovery.active_version(Surface.objects.filter(organization=organization), now=NOW)

    assert active.version == 2


def test_active_version_treats_an_unset_start_as_started_and_respects_the_end(organization):
    factories.profile(organization, version=1, status="active", effective_date=None)
    factories.profile(organization, version=2, status="active", effective_date=PAST, effective_until=NOW)

    active = recovery.active_version(Profile.objects.filter(organization=organization), now=NOW)

    assert active.version == 1


def test_no_versions_means_no_report(organization):
    assert surface_state(organization, "surf-none") is None
    assert profile_state(organization, "prof-none") is None


# --- surface recovery: the reference's six recommended actions ------------------------------


def test_review_surface_with_nothing_active_recommends_approval_to_enable_evaluation(organization):
    factories.surface(organization, version=1, status="review")

    report = surface_state(organization)

    assert (report.latest_version, report.latest_status) == (1, "review")
    assert (report.active_version, report.active_status) == (None, None)
    assert report.version_count == 1
    assert report.warnings == ["no active version — evaluation requests will be rejected"]
    assert report.recommended_next_actions == ["approve latest review version to enable evaluation"]


def test_review_version_above_an_active_one_recommends_approval_to_activate_the_update(organization):
    factories.surface(organization, version=1, status="active", effective_from=PAST)
    factories.surface(organization, version=2, status="review")

    report = surface_state(organization)

    assert (report.active_version, report.active_status) == (1, "active")
    assert report.warnings == ["latest version 2 is in review; evaluation uses version 1"]
    assert report.recommended_next_actions == ["approve latest review version to activate updated configuration"]


def test_deprecated_surface_with_successor_recommends_grant_migration(organization):
    factories.surface(
        organization, status="deprecated", successor_surface_id="surf-loan-v2", deprecation_reason="new rules"
    )

    report = surface_state(organization)

    assert (report.successor_surface_id, report.deprecation_reason) == ("surf-loan-v2", "new rules")
    assert report.warnings == ["surface is deprecated and should not receive new grants"]
    assert report.recommended_next_actions == ["inspect successor surface 'surf-loan-v2' and plan grant migration"]


def test_deprecated_surface_without_successor_or_review_recommends_a_replacement(organization):
    factories.surface(organization, status="deprecated")

    report = surface_state(organization)

    assert report.successor_surface_id == ""
    assert report.recommended_next_actions == ["apply replacement surface"]


def test_deprecated_surface_without_successor_but_with_a_review_version_recommends_approving_it(organization):
    factories.surface(organization, version=1, status="review")
    factories.surface(organization, version=2, status="deprecated")

    assert surface_state(organization).recommended_next_actions == ["approve replacement surface"]


def test_review_version_after_a_deprecated_one_is_the_replacement_to_approve(organization):
    factories.surface(organization, version=1, status="deprecated")
    factories.surface(organization, version=2, status="review")

    report = surface_state(organization)

    assert report.warnings == ["no active version — evaluation requests will be rejected"]
    assert report.recommended_next_actions == ["approve replacement surface"]


def test_active_surface_with_a_review_version_recommends_deprecating_with_a_successor(organization):
    factories.surface(organization, version=1, status="review")
    factories.surface(organization, version=2, status="active", effective_from=PAST)

    report = surface_state(organization)

    assert report.warnings == []
    assert report.recommended_next_actions == ["deprecate this surface with successor_id pointing to the replacement"]


def test_healthy_active_surface_has_no_warnings_and_no_actions(organization):
    factories.surface(organization, version=1, status="active", effective_from=PAST)

    report = surface_state(organization)

    assert (report.warnings, report.recommended_next_actions) == ([], [])


# --- surface recovery: warnings -------------------------------------------------------------


def test_active_surface_not_yet_effective_is_not_the_active_version(organization):
    factories.surface(organization, version=1, status="active", effective_from=FUTURE)

    report = surface_state(organization)

    assert report.active_version is None
    assert report.warnings == [
        "no active version — evaluation requests will be rejected",
        "version 1 is active but outside its effective window",
    ]
    assert report.recommended_next_actions == []


def test_expired_active_versions_are_each_named_latest_first(organization):
    factories.surface(organization, version=1, status="active", effective_from=PAST, effective_until=NOW)
    factories.surface(organization, version=2, status="active", effective_from=FUTURE)

    assert surface_state(organization).warnings == [
        "no active version — evaluation requests will be rejected",
        "version 2 is active but outside its effective window",
        "version 1 is active but outside its effective window",
    ]


def test_retired_surface_warns_that_it_is_no_longer_operational(organization):
    factories.surface(organization, version=1, status="retired")

    report = surface_state(organization)

    assert report.warnings == ["surface is retired and is no longer operational"]
    assert report.recommended_next_actions == []


def test_surface_report_is_deterministic(organization):
    factories.surface(organization, version=1, status="active", effective_from=FUTURE)
    factories.surface(organization, version=2, status="review")
    assert surface_state(organization) == surface_state(organization)


# --- profile recovery -----------------------------------------------------------------------


def test_active_profile_with_active_grants_recommends_inspecting_them(organization):
    factories.profile(organization, version=1, status="active", effective_date=PAST)
    agent = factories.agent(organization)
    factories.grant(organization, key="g-1", agent_=agent)
    factories.grant(organization, key="g-2", agent_=agent)
    factories.grant(organization, key="g-revoked", agent_=agent, status="revoked")
    factories.grant(organization, key="g-elsewhere", agent_=agent, profile_key="prof-other")

    report = profile_state(organization)

    assert report.active_grant_count == 2
    assert (report.active_version, report.active_status) == (1, "active")
    assert report.surface_id == "surf-loan-approval"
    assert report.warnings == []
    assert report.recommended_next_actions == ["inspect dependent grants before deprecating this profile version"]


def test_active_profile_without_grants_recommends_nothing(organization):
    factories.profile(organization, version=1, status="active", effective_date=PAST)

    report = profile_state(organization)

    assert report.active_grant_count == 0
    assert (report.warnings, report.recommended_next_actions) == ([], [])


def test_future_dated_profile_recommends_reapplying_with_a_past_effective_date(organization):
    factories.profile(organization, version=1, status="active", effective_date=FUTURE)

    report = profile_state(organization)

    assert report.active_version is None
    assert report.warnings == [
        "no version is currently effective; a version exists with a future effective_date",
        "version 1 is active but outside its effective window",
    ]
    assert report.recommended_next_actions == [
        "re-apply profile with an effective_date in the past to restore evaluation eligibility"
    ]


def test_profile_in_review_only_warns_evaluation_will_fail_and_recommends_approval(organization):
    factories.profile(organization, version=1, status="review")

    report = profile_state(organization)

    assert report.warnings == ["no active version — evaluation requests referencing this profile will fail"]
    assert report.recommended_next_actions == ["approve latest review version to activate updated authority"]


def test_review_profile_above_an_active_one_with_grants_recommends_both_steps(organization):
    factories.profile(organization, version=1, status="active", effective_date=PAST)
    factories.profile(organization, version=2, status="review")
    factories.grant(organization)

    report = profile_state(organization)

    assert (report.latest_version, report.latest_status, report.active_version) == (2, "review", 1)
    assert report.warnings == ["latest version 2 is in review; evaluation uses version 1"]
    assert report.recommended_next_actions == [
        "approve latest review version to activate updated authority",
        "inspect dependent grants before deprecating this profile version",
    ]


def test_deprecated_profile_warns_it_is_deprecated(organization):
    factories.profile(organization, version=1, status="deprecated")

    assert profile_state(organization).warnings == [
        "no active version — evaluation requests referencing this profile will fail",
        "profile is deprecated",
    ]


def test_retired_profile_warns_it_is_retired(organization):
    factories.profile(organization, version=1, status="retired")

    assert profile_state(organization).warnings[-1] == "profile is retired"


def test_profile_report_lists_every_version_latest_first_with_its_effective_date(organization):
    factories.profile(organization, version=1, status="deprecated", effective_date=PAST)
    factories.profile(organization, version=2, status="active", effective_date=None)

    report = profile_state(organization)

    assert report.version_count == 2
    assert report.versions == [
        {"version": 2, "status": "active", "effective_from": None},
        {"version": 1, "status": "deprecated", "effective_from": PAST},
    ]
    assert report.capability_note == recovery.PROFILE_CAPABILITY_NOTE
    assert "review→active→deprecated" in report.capability_note and "explicit approval" in report.capability_note


def test_grants_of_another_organization_are_not_counted_when_scoped_by_the_caller(organization):
    other = ensure_organization("globex", "Globex")
    factories.profile(organization, version=1, status="active", effective_date=PAST)
    factories.grant(other, agent_=factories.agent(other))

    assert profile_state(organization).active_grant_count == 0


def test_recovery_writes_nothing(organization, django_assert_max_num_queries):
    factories.surface(organization, version=1, status="review")
    factories.profile(organization, version=1, status="review")

    with django_assert_max_num_queries(5) as captured:
        surface_state(organization)
        profile_state(organization)

    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in captured.captured_queries)
