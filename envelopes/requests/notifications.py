"""FYI routes (notify_manager, notify_team_owner): a card in the inbox plus an email."""

from django.conf import settings
from django.core.mail import send_mail

from envelopes.choices import Route
from envelopes.models import ApprovalRequest
from governance.models import TeamMembership


def fyi_recipients(request: ApprovalRequest) -> list[str]:
    owner = request.channel.owner
    if request.route == Route.NOTIFY_MANAGER:
        people = [owner.manager] if owner.manager_id else []
    elif request.route == Route.NOTIFY_TEAM_OWNER:
        people = [m.person for m in TeamMembership.objects.filter(team_id=request.team_id, is_owner=True)]
    else:
        people = []
    return sorted({p.email for p in people if p and p.email})


def email_fyi(request_id) -> int:
    """Send the FYI email for a request (called after its transaction commits)."""
    request = ApprovalRequest.objects.select_related("channel__owner__manager").filter(pk=request_id).first()
    if request is None:
        return 0
    recipients = fyi_recipients(request)
    if not recipients:
        return 0
    link = f"{settings.PUBLIC_BASE_URL}/admin/"
    body = f"{request.summary}\n\nFrom agent channel “{request.channel.name}” (owner {request.channel.owner}).\n{link}"
    return send_mail(f"[Mandate] FYI: {request.title}", body, settings.DEFAULT_FROM_EMAIL, recipients)
