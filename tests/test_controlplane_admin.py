"""The control-plane console (Django admin): who sees what, lifecycle buttons, bundle upload."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.models import Agent, BusinessService, Process, Profile, Surface
from controlplane.services.bundles import apply_bundle
from evidence.models import AdminAuditRecord, ControlPlaneAuditRecord
from governance.choices import Role
from governance.models import Person
from governance.services.people import ensure_organization
from tests import factories

pytestmark = pytest.mark.django_db

SURFACES = "/admin/controlplane/surface/"
BUNDLE = "/admin/controlplane/surface/bundle/"

SMALL_BUNDLE = """\
apiVersion: midas.accept.io/v1
kind: BusinessService
metadata:
  id: bs-payments
  name: Payments
spec:
  service_type: customer_facing
---
apiVersion: midas.accept.io/v1
kind: Process
metadata:
  id: proc-payment-release
  name: Payment Release
spec:
  business_service_id: bs-payments
---
apiVersion: midas.accept.io/v1
kind: Surface
metadata:
  id: surf-payment-release
  name: Payment Release
spec:
  process_id: proc-payment-release
  risk_tier: high
  business_owner: alice
  technical_owner: payments-platform-team
"""


@pytest.fixture
def signed_in(client, make_person):
    """A Django test client signed in as a fresh staff person holding ``roles``."""

    def sign_in(*roles, username=None):
        person = make_person(roles=roles, username=username)
        client.force_login(person)
        return client

    return sign_in


@pytest.fixture
def other_organization():
    return ensure_organization("globex", "Globex")


def html(response) -> str:
    return response.content.decode()


def change_url(obj) -> str:
    return f"/admin/controlplane/{obj._meta.model_name}/{obj.pk}/change/"


def review_surface(organization, *, submitted_by="maker", version=1, **fields):
    return factories.surface(
        organization,
        version=version,
        status="review",
        submitted_by=submitted_by,
        effective_from=None,
        business_owner=fields.pop("business_owner", "alice"),
        **fields,
    )


# --- who sees what ------------------------------------------------------------------------


def test_viewer_sees_only_their_organizations_surfaces(signed_in, organization, other_organization):
    factories.surface(organization, key="surf-ours")
    factories.surface(other_organization, key="surf-theirs")
    page = html(signed_in(Role.PLATFORM_VIEWER).get(SURFACES))
    assert "surf-ours" in page
    assert "surf-theirs" not in page
    assert ">ID<" in page  # the logical id is labelled as MIDAS names it


def test_another_organizations_surface_page_is_not_shown(signed_in, other_organization):
    theirs = factories.surface(other_organization, key="surf-theirs")
    response = signed_in(Role.PLATFORM_ADMIN).get(change_url(theirs), follow=True)
    assert "surf-theirs" not in html(response)
    assert "doesn’t exist" in html(response) or "does not exist" in html(response)


def test_superuser_sees_every_organization_and_which_one_owns_what(client, organization, other_organization):
    factories.surface(organization, key="surf-ours")
    theirs = factories.surface(other_organization, key="surf-theirs")
    client.force_login(Person.objects.create_superuser("root", "root@example.com", "pw"))
    page = html(client.get(SURFACES))
    assert "surf-ours" in page and "surf-theirs" in page
    assert "Globex" in page
    assert "Globex" in html(client.get(change_url(theirs)))


def test_person_without_a_control_plane_role_cannot_open_the_pages(signed_in, organization):
    factories.surface(organization)
    client = signed_in()
    assert client.get(SURFACES).status_code == 403
    assert "Surfaces" not in html(client.get("/admin/"))


def test_approver_can_open_the_pages_they_approve_on(signed_in, organization):
    surface = factories.surface(organization)
    assert signed_in(Role.GOVERNANCE_APPROVER).get(change_url(surface)).status_code == 200


@pytest.mark.parametrize("model", ["businessservice", "capability", "businessservicecapability", "process", "policy"])
def test_structural_lists_open_for_a_viewer(signed_in, model):
    response = signed_in(Role.PLATFORM_VIEWER).get(f"/admin/controlplane/{model}/")
    assert response.status_code == 200
    assert "declared yet" in html(response)  # an empty list says what will appear there


def test_every_declared_kind_has_a_readable_page(signed_in, organization):
    apply_bundle(organization, SMALL_BUNDLE, actor="maker")
    grant = factories.grant(organization, profile_key=factories.profile(organization, surface_key="x").key)
    client = signed_in(Role.PLATFORM_VIEWER)
    for obj in (
        BusinessService.objects.get(key="bs-payments"),
        Process.objects.get(key="proc-payment-release"),
        Surface.objects.get(key="surf-payment-release"),
        Profile.objects.get(key=grant.profile_key),
        Agent.objects.get(pk=grant.agent_id),
        grant,
    ):
        response = client.get(change_url(obj))
        assert response.status_code == 200, obj
        assert obj.key in html(response)


def test_declarations_cannot_be_edited_or_deleted_in_the_admin(signed_in, organization):
    surface = factories.surface(organization, name="Original")
    client = signed_in(Role.PLATFORM_ADMIN)
    response = client.post(change_url(surface), {"name": "Edited"})
    assert response.status_code == 403
    assert client.post(f"{SURFACES}{surface.pk}/delete/", {"post": "yes"}).status_code == 403
    surface.refresh_from_db()
    assert surface.name == "Original"


def test_add_opens_the_bundle_upload_for_operators_and_is_refused_to_viewers(signed_in):
    response = signed_in(Role.PLATFORM_OPERATOR).get(f"{SURFACES}add/")
    assert response.status_code == 302 and response["Location"] == BUNDLE
    assert signed_in(Role.PLATFORM_VIEWER).get(f"{SURFACES}add/").status_code == 403


def test_surface_list_filters_by_status_process_and_owner(signed_in, organization):
    loans = factories.process(organization, key="proc-loans")
    cards = factories.process(organization, key="proc-cards")
    factories.surface(organization, key="surf-live", process_=loans, business_owner="alice")
    review_surface(organization, key="surf-pending", process_=cards, business_owner="bob")
    client = signed_in(Role.PLATFORM_VIEWER)

    by_status = html(client.get(SURFACES, {"status__exact": "review"}))
    assert "surf-pending" in by_status and "surf-live" not in by_status
    by_process = html(client.get(SURFACES, {"process__id__exact": loans.pk}))
    assert "surf-live" in by_process and "surf-pending" not in by_process
    by_owner = html(client.get(SURFACES, {"business_owner": "bob"}))
    assert "surf-pending" in by_owner and "surf-live" not in by_owner


def test_latest_version_filter_hides_older_versions(signed_in, organization):
    factories.surface(organization, key="surf-x", version=1, name="first")
    review_surface(organization, key="surf-x", version=2, name="second")
    page = html(signed_in(Role.PLATFORM_VIEWER).get(SURFACES, {"versions": "latest"}))
    assert "second" in page and "first" not in page


# --- surface page: versions, recovery, approve, deprecate ---------------------------------


def test_surface_page_shows_every_version_and_the_recovery_analysis(signed_in, organization):
    factories.surface(organization, key="surf-x", version=1, approved_by="carol")
    latest = review_surface(organization, key="surf-x", version=2, submitted_by="dave")
    page = html(signed_in(Role.PLATFORM_VIEWER).get(change_url(latest)))
    versions = page.split('id="cp-versions"', 1)[1].split("</table>", 1)[0]
    assert "v1" in versions and "v2" in versions and "carol" in versions and "dave" in versions
    assert "Evaluation uses <strong>v1</strong>" in page
    assert "latest version 2 is in review; evaluation uses version 1" in page
    assert "approve latest review version to activate updated configuration" in page


def test_approving_in_the_admin_activates_the_version_and_records_the_approver(signed_in, organization):
    surface = review_surface(organization, submitted_by="maker")
    client = signed_in(Role.PLATFORM_ADMIN, username="checker")
    assert 'id="cp-approve" disabled' not in html(client.get(change_url(surface)))

    response = client.post(f"{SURFACES}{surface.pk}/approve/", {"version": 1}, follow=True)

    surface.refresh_from_db()
    assert surface.status == "active" and surface.approved_by == "checker"
    assert "is now active" in html(response)
    record = ControlPlaneAuditRecord.objects.get(resource_id=surface.key, action="approve")
    assert record.actor == "checker"


def test_submitter_cannot_approve_their_own_surface(signed_in, organization):
    surface = review_surface(organization, submitted_by="maker")
    client = signed_in(Role.PLATFORM_ADMIN, username="maker")
    page = html(client.get(change_url(surface)))
    assert 'id="cp-approve" disabled' in page
    assert "You submitted this version: maker-checker" in page

    response = client.post(f"{SURFACES}{surface.pk}/approve/", {"version": 1}, follow=True)

    surface.refresh_from_db()
    assert surface.status == "review"
    assert "maker-checker" in html(response)


def test_approver_who_does_not_own_the_surface_is_refused(signed_in, organization):
    surface = review_surface(organization, business_owner="alice", technical_owner="platform-team")
    client = signed_in(Role.GOVERNANCE_APPROVER, username="mallory")
    assert "approver who owns this surface" in html(client.get(change_url(surface)))

    response = client.post(f"{SURFACES}{surface.pk}/approve/", {"version": 1}, follow=True)

    surface.refresh_from_db()
    assert surface.status == "review"
    assert "Not allowed: this needs the controlplane:approve permission." in html(response)


def test_approver_who_owns_the_surface_may_approve_it(signed_in, organization):
    surface = review_surface(organization, business_owner="alice")
    signed_in(Role.GOVERNANCE_APPROVER, username="alice").post(f"{SURFACES}{surface.pk}/approve/", {"version": 1})
    surface.refresh_from_db()
    assert surface.status == "active" and surface.approved_by == "alice"


def test_viewer_sees_why_they_cannot_approve_and_a_post_changes_nothing(signed_in, organization):
    surface = review_surface(organization)
    client = signed_in(Role.PLATFORM_VIEWER)
    assert "Needs the platform.admin or governance.approver role." in html(client.get(change_url(surface)))
    response = client.post(f"{SURFACES}{surface.pk}/approve/", {"version": 1}, follow=True)
    surface.refresh_from_db()
    assert surface.status == "review"
    assert "Needs the platform.admin or governance.approver role." in html(response)


def test_an_active_surface_cannot_be_approved_and_the_page_says_why(signed_in, organization):
    surface = factories.surface(organization, status="active")
    client = signed_in(Role.PLATFORM_ADMIN)
    assert "Only review versions can be approved" in html(client.get(change_url(surface)))
    response = client.post(f"{SURFACES}{surface.pk}/approve/", {"version": 1}, follow=True)
    assert "is not in review status" in html(response)


def test_a_version_applied_after_the_page_was_opened_is_not_approved_unseen(signed_in, organization):
    first = review_surface(organization, key="surf-x", version=1)
    review_surface(organization, key="surf-x", version=2)
    response = signed_in(Role.PLATFORM_ADMIN).post(f"{SURFACES}{first.pk}/approve/", {"version": 1}, follow=True)
    assert not Surface.objects.filter(key="surf-x", status="active").exists()
    assert "Version v2 is now the latest" in html(response)


def test_approve_only_answers_post(signed_in, organization):
    surface = review_surface(organization)
    assert signed_in(Role.PLATFORM_ADMIN).get(f"{SURFACES}{surface.pk}/approve/").status_code == 405


def test_deprecating_needs_a_reason_and_records_it_with_the_successor(signed_in, organization):
    surface = factories.surface(organization, key="surf-old")
    factories.surface(organization, key="surf-new")
    client = signed_in(Role.PLATFORM_ADMIN)

    response = client.post(f"{SURFACES}{surface.pk}/deprecate/", {"reason": ""}, follow=True)
    assert "Say why" in html(response)
    surface.refresh_from_db()
    assert surface.status == "active"

    client.post(f"{SURFACES}{surface.pk}/deprecate/", {"reason": "replaced", "successor_id": "surf-new"})
    surface.refresh_from_db()
    assert (surface.status, surface.deprecation_reason, surface.successor_surface_id) == (
        "deprecated",
        "replaced",
        "surf-new",
    )
    page = html(client.get(change_url(surface)))
    assert "inspect successor surface &#x27;surf-new&#x27; and plan grant migration" in page
    assert "Only an active surface can be deprecated" in page


def test_deprecating_with_an_unknown_successor_shows_the_services_refusal(signed_in, organization):
    surface = factories.surface(organization)
    response = signed_in(Role.PLATFORM_ADMIN).post(
        f"{SURFACES}{surface.pk}/deprecate/", {"reason": "gone", "successor_id": "surf-missing"}, follow=True
    )
    assert "uccessor_id: surface &#x27;surf-missing&#x27; not found" in html(response)
    surface.refresh_from_db()
    assert surface.status == "active"


# --- profiles and grants ------------------------------------------------------------------


def test_profile_versions_are_approved_and_deprecated_from_their_page(signed_in, organization):
    profile = factories.profile(organization, status="review", effective_date=None)
    client = signed_in(Role.PLATFORM_ADMIN, username="checker")
    assert "Only active versions can be deprecated" in html(client.get(change_url(profile)))

    client.post(f"/admin/controlplane/profile/{profile.pk}/approve/")
    profile.refresh_from_db()
    assert (profile.status, profile.approved_by) == ("active", "checker")

    client.post(f"/admin/controlplane/profile/{profile.pk}/deprecate/")
    profile.refresh_from_db()
    assert profile.status == "deprecated"
    assert "profile is deprecated" in html(client.get(change_url(profile)))


def test_profile_page_counts_active_grants_in_its_recovery_panel(signed_in, organization):
    profile = factories.profile(organization)
    factories.grant(organization, key="grant-a", profile_key=profile.key)
    page = html(signed_in(Role.PLATFORM_VIEWER).get(change_url(profile)))
    assert "inspect dependent grants before deprecating this profile version" in page
    assert "grant-a" in page


def test_grant_is_suspended_reinstated_and_revoked_with_a_reason(signed_in, organization):
    grant = factories.grant(organization)
    url = f"/admin/controlplane/grant/{grant.pk}/transition/"
    client = signed_in(Role.PLATFORM_ADMIN)

    response = client.post(url, {"action": "suspend", "reason": ""}, follow=True)
    assert "Say why" in html(response)
    grant.refresh_from_db()
    assert grant.status == "active"

    for action, status in (("suspend", "suspended"), ("reinstate", "active"), ("revoke", "revoked")):
        client.post(url, {"action": action, "reason": f"{action} for the test"})
        grant.refresh_from_db()
        assert grant.status == status
    assert ControlPlaneAuditRecord.objects.filter(resource_id=grant.key, action="revoke").exists()

    page = html(client.get(change_url(grant)))
    assert "The grant is revoked; that is final." in page
    response = client.post(url, {"action": "reinstate", "reason": "undo"}, follow=True)
    assert "cannot reinstate it" in html(response)


# --- bundle upload ------------------------------------------------------------------------


def preview(client, text=SMALL_BUNDLE):
    return client.post(BUNDLE, {"bundle_text": text, "step": "preview"})


def token_of(response) -> str:
    return html(response).split('name="token" value="', 1)[1].split('"', 1)[0]


def test_preview_shows_the_plan_and_writes_nothing(signed_in, organization):
    response = preview(signed_in(Role.PLATFORM_OPERATOR))
    page = html(response)
    assert response.status_code == 200
    entries = page.split('id="cp-plan-entries"', 1)[1].split("</table>", 1)[0]
    for kind, key in (("BusinessService", "bs-payments"), ("Process", "proc-payment-release")):
        assert kind in entries and key in entries
    assert "surf-payment-release" in entries and "this bundle" in entries
    assert "Apply 3 changes" in page and 'id="cp-apply" disabled' not in page
    assert not Surface.objects.exists()


def test_preview_shows_the_diff_of_a_new_version_and_terminal_reference_warnings(signed_in, organization):
    apply_bundle(organization, SMALL_BUNDLE, actor="maker")
    Surface.objects.update(status="active")  # a re-apply over a version still in review is a conflict
    Process.objects.filter(key="proc-payment-release").update(status="deprecated")
    changed = SMALL_BUNDLE.replace("risk_tier: high", "risk_tier: medium")
    page = html(preview(signed_in(Role.PLATFORM_OPERATOR), changed))
    diff = page.split('class="cp-table cp-diff"', 1)[1].split("</table>", 1)[0]
    assert "spec.risk_tier" in diff and "high" in diff and "medium" in diff
    assert "REF_PROCESS_TERMINAL" in page


def test_applying_a_preview_creates_review_versions_submitted_by_the_uploader(signed_in, organization):
    client = signed_in(Role.PLATFORM_OPERATOR, username="uploader")
    token = token_of(preview(client))

    response = client.post(BUNDLE, {"step": "apply", "token": token})

    page = html(response)
    assert "Bundle applied: 3 created" in page
    surface = Surface.objects.get(organization=organization, key="surf-payment-release")
    assert (surface.version, surface.status, surface.submitted_by) == (1, "review", "uploader")
    assert f'href="{change_url(surface)}"' in page
    record = AdminAuditRecord.objects.get(action="apply.invoked")
    assert (record.actor_id, record.outcome, record.target_type) == ("uploader", "success", "bundle")
    assert record.details["created_count"] == 3 and record.details["via"] == "admin"
    assert record.details["bundle_bytes"] == len(SMALL_BUNDLE.encode())


def test_a_preview_is_applied_at_most_once(signed_in, organization):
    client = signed_in(Role.PLATFORM_OPERATOR)
    token = token_of(preview(client))
    client.post(BUNDLE, {"step": "apply", "token": token})
    response = client.post(BUNDLE, {"step": "apply", "token": token}, follow=True)
    assert "no longer available" in html(response)
    assert AdminAuditRecord.objects.filter(action="apply.invoked").count() == 1


def test_invalid_documents_block_apply_and_say_what_to_fix(signed_in, organization):
    broken = SMALL_BUNDLE.replace("process_id: proc-payment-release", "process_id: proc-missing")
    client = signed_in(Role.PLATFORM_OPERATOR)
    response = preview(client, broken)
    page = html(response)
    assert 'id="cp-apply" disabled' in page
    assert "Fix the 1 invalid document first" in page
    assert "referenced Process &#x27;proc-missing&#x27; does not exist" in page

    # Posting the apply anyway writes nothing and is recorded as a failure.
    page = html(client.post(BUNDLE, {"step": "apply", "token": token_of(response)}))
    assert "Nothing was written" in page
    assert not BusinessService.objects.exists()
    assert AdminAuditRecord.objects.get(action="apply.invoked").outcome == "failure"


def test_malformed_yaml_is_explained_on_the_form(signed_in):
    response = preview(signed_in(Role.PLATFORM_OPERATOR), "kind: [unclosed")
    assert response.status_code == 200
    assert "This is not a bundle Mandate can read: malformed YAML" in html(response)


def test_an_empty_upload_asks_for_a_bundle(signed_in):
    response = signed_in(Role.PLATFORM_OPERATOR).post(BUNDLE, {"bundle_text": "  ", "step": "preview"})
    assert "Choose a YAML file or paste a bundle." in html(response)


def test_a_bundle_can_be_uploaded_as_a_file(signed_in):
    upload = SimpleUploadedFile("bundle.yaml", SMALL_BUNDLE.encode(), content_type="application/yaml")
    response = signed_in(Role.PLATFORM_ADMIN).post(BUNDLE, {"bundle_file": upload, "step": "preview"})
    assert "Apply 3 changes" in html(response)


def test_a_bundle_over_ten_mebibytes_is_refused(signed_in):
    upload = SimpleUploadedFile("big.yaml", b"#" * (10 * 1024 * 1024 + 1))
    response = signed_in(Role.PLATFORM_ADMIN).post(BUNDLE, {"bundle_file": upload, "step": "preview"})
    assert "larger than the 10 MiB limit" in html(response)


def test_a_file_that_is_not_utf8_is_refused(signed_in):
    upload = SimpleUploadedFile("bundle.yaml", b"\xff\xfe\x00k")
    response = signed_in(Role.PLATFORM_ADMIN).post(BUNDLE, {"bundle_file": upload, "step": "preview"})
    assert "The file is not UTF-8 text." in html(response)


@pytest.mark.parametrize("role", [Role.PLATFORM_VIEWER, Role.GOVERNANCE_APPROVER])
def test_uploading_needs_the_admin_or_operator_role(signed_in, role):
    client = signed_in(role)
    response = client.get(BUNDLE)
    assert response.status_code == 403
    assert "needs the platform.admin or platform.operator role" in html(response)
    assert preview(client).status_code == 403
    assert not BusinessService.objects.exists()


def test_superuser_without_an_organization_applies_to_the_default_one(client, settings):
    settings.MANDATE_DEFAULT_ORGANIZATION = "demo"
    client.force_login(Person.objects.create_superuser("root", "root@example.com", "pw"))
    token = token_of(preview(client))
    client.post(BUNDLE, {"step": "apply", "token": token})
    assert Surface.objects.get(key="surf-payment-release").organization.slug == "demo"


def test_tags_consequence_types_and_labels_show_as_chips_not_json(signed_in, organization):
    surface = factories.surface(organization, key="surf-chips", version=1, approved_by="carol")
    Surface.objects.filter(pk=surface.pk).update(
        tags=["payments", "money-movement"], consequence_types=["monetary"], labels={"team": "treasury"}
    )
    page = html(signed_in(Role.PLATFORM_VIEWER).get(change_url(surface)))
    assert '<li class="cp-chip">payments</li><li class="cp-chip">money-movement</li>' in page
    assert '<li class="cp-chip">monetary</li>' in page and '<li class="cp-chip">team: treasury</li>' in page
    assert "[&quot;payments&quot;" not in page and '["payments"' not in page
