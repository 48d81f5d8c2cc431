"""The gate's operator endpoints for the catalogue, the policy and learned targets
(``/v1/admin/policy…``, ``/v1/admin/domains…``, ``/v1/admin/paths…``, ``/v1/admin/reload``),
with the LatchGate reference's bodies, statuses and error codes. Each calls one service."""

import logging

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from controlplane.api.gate import serializers as s
from controlplane.api.gate.base import OperatorView
from controlplane.choices import TargetSource
from controlplane.gate import acl, learned
from controlplane.gate.manifests import ManifestError
from controlplane.gate.registry import reload
from controlplane.gate.rego import PolicyError
from governance.api.errors import APIError
from governance.control_characters import has_control_characters
from governance.timestamps import rfc3339_isoformat

logger = logging.getLogger(__name__)


def _errors(**descriptions) -> dict:
    return {
        int(code.lstrip("e")): OpenApiResponse(s.ErrorSerializer, description=text)
        for code, text in {
            **descriptions,
            "e401": "Unauthenticated",
            "e403": "Not an operator (platform.operator or platform.admin)",
            "e429": "rate_limit_exceeded",
        }.items()
    }


ACTION_FILTER = OpenApiParameter("action", str, description="Only this action's entries")


# --- policy ------------------------------------------------------------------------------------


def action_filter(request) -> str | None:
    """``?action=`` of the learned domains and paths: one action's, or every action's."""
    action = request.query_params.get("action") or None
    if action is not None and has_control_characters(action):
        raise APIError(400, "invalid_request", reason="action holds control characters")
    return action


class PolicyView(OperatorView):
    @extend_schema(
        responses={200: s.PolicySerializer, **_errors()},
        tags=["gate"],
        summary="The whole ACL",
        operation_id="gate_policy_show",
    )
    def get(self, request):
        return Response(acl.overview())


class PrincipalView(OperatorView):
    @extend_schema(
        responses={200: s.PrincipalDetailSerializer, **_errors(e400="invalid_principal", e404="principal_not_found")},
        tags=["gate"],
        summary="One principal's ACL with a risk breakdown",
        operation_id="gate_policy_principal",
    )
    def get(self, request, principal):
        return Response(acl.principal_detail(principal))


class NamedPrincipalView(PrincipalView):
    """A route whose last segment is also a principal's name: a GET there reads that
    principal (LatchGate routes it so), documented once, on ``/v1/admin/policy/{principal}``."""

    @extend_schema(exclude=True)
    def get(self, request, principal):
        return super().get(request, principal)


class GrantView(NamedPrincipalView):
    """``POST /v1/admin/policy/grant``."""

    @extend_schema(
        request=s.GrantRequestSerializer,
        responses={
            200: s.PrincipalSerializer,
            **_errors(
                e400="invalid_request, invalid_principal, empty_actions, too_many_actions, invalid_action_id, "
                "unknown_action"
            ),
        },
        tags=["gate"],
        summary="Grant actions to a principal (sinks are derived)",
        operation_id="gate_policy_grant",
    )
    def post(self, request, principal):
        body = self.body(s.GrantRequestSerializer)
        entry = acl.grant(
            body["principal"], body["actions"], actor=self.actor, inherits_wildcard=body["inherits_wildcard"]
        )
        return Response(entry.as_wire())


class RevokeView(NamedPrincipalView):
    @extend_schema(
        request=s.RevokeRequestSerializer,
        responses={
            200: s.PrincipalSerializer,
            **_errors(e400="invalid_request, invalid_principal, empty_actions, too_many_actions, invalid_action_id"),
        },
        tags=["gate"],
        summary="Revoke actions from a principal (an entry left empty is removed)",
        operation_id="gate_policy_revoke",
    )
    def post(self, request, principal):
        body = self.body(s.RevokeRequestSerializer)
        return Response(acl.revoke(body["principal"], body["actions"], actor=self.actor).as_wire())


class AllowlistView(NamedPrincipalView):
    def _answer(self, body):
        return Response({"ok": True, "action_id": body["action_id"], "agent_id": body["agent_id"]})

    @extend_schema(
        request=s.AllowlistRequestSerializer,
        responses={200: s.AllowlistResponseSerializer, **_errors(e400="invalid_input", e404="action_not_found")},
        tags=["gate"],
        summary="Let an (action, agent) pair skip the approval hold",
        operation_id="gate_allowlist_add",
    )
    def post(self, request, principal):
        body = self.body(s.AllowlistRequestSerializer)
        acl.add_to_allowlist(body["action_id"], body["agent_id"], actor=self.actor)
        return self._answer(body)

    @extend_schema(
        request=s.AllowlistRequestSerializer,
        responses={
            200: s.AllowlistResponseSerializer,
            **_errors(e400="invalid_input", e404="allowlist_entry_not_found"),
        },
        tags=["gate"],
        summary="Remove an approval allowlist entry",
        operation_id="gate_allowlist_remove",
    )
    def delete(self, request, principal):
        body = self.body(s.AllowlistRequestSerializer)
        acl.remove_from_allowlist(body["action_id"], body["agent_id"], actor=self.actor)
        return self._answer(body)


# --- learned targets ---------------------------------------------------------------------------


def _learned_row(row, value_key: str) -> dict:
    return {
        value_key: getattr(row, value_key),
        "action_id": row.action_id,
        "source": row.source,
        "added_by": row.added_by,
        "added_at": rfc3339_isoformat(row.added_at),
        "approval_id": row.approval_id,
    }


class DomainsView(OperatorView):
    @extend_schema(
        parameters=[ACTION_FILTER],
        responses={200: s.DomainListSerializer, **_errors()},
        tags=["gate"],
        summary="Learned domains",
        operation_id="gate_domains_list",
    )
    def get(self, request):
        rows = learned.learned_domains(action_filter(request))
        return Response({"domains": [_learned_row(row, "domain") for row in rows]})

    @extend_schema(
        request=s.DomainRequestSerializer,
        responses={
            200: s.DomainResponseSerializer,
            **_errors(e400="invalid_request, invalid_domain", e404="action_not_found", e409="domain_already_exists"),
        },
        tags=["gate"],
        summary="Learn a domain for an action",
        operation_id="gate_domains_add",
    )
    def post(self, request):
        body = self.body(s.DomainRequestSerializer)
        row = learned.learn_domain(body["action_id"], body["domain"], TargetSource.ADMIN, self.actor)
        return Response({"domain": row.domain, "action_id": row.action_id})

    @extend_schema(
        request=s.DomainRequestSerializer,
        responses={200: s.RemovedSerializer, **_errors(e400="invalid_request, invalid_domain")},
        tags=["gate"],
        summary="Forget a learned domain",
        operation_id="gate_domains_remove",
    )
    def delete(self, request):
        body = self.body(s.DomainRequestSerializer)
        return Response({"removed": learned.forget_domain(body["action_id"], body["domain"], actor=self.actor)})


class DomainsClearView(OperatorView):
    @extend_schema(
        parameters=[ACTION_FILTER],
        responses={200: s.ClearedSerializer, **_errors()},
        tags=["gate"],
        summary="Forget every learned domain (of one action with ?action=)",
        operation_id="gate_domains_clear",
    )
    def delete(self, request):
        count = learned.clear_domains(actor=self.actor, action_id=action_filter(request))
        return Response({"cleared": True, "deleted_count": count})


class PathsView(OperatorView):
    @extend_schema(
        parameters=[ACTION_FILTER],
        responses={200: s.PathListSerializer, **_errors()},
        tags=["gate"],
        summary="Learned paths",
        operation_id="gate_paths_list",
    )
    def get(self, request):
        rows = learned.learned_paths(action_filter(request))
        return Response({"paths": [_learned_row(row, "path") for row in rows]})

    @extend_schema(
        request=s.PathRequestSerializer,
        responses={
            200: s.PathResponseSerializer,
            **_errors(e400="invalid_request, invalid_path", e404="action_not_found", e409="path_already_exists"),
        },
        tags=["gate"],
        summary="Learn a path glob (relative to the session's fs_root) for an fs action",
        operation_id="gate_paths_add",
    )
    def post(self, request):
        body = self.body(s.PathRequestSerializer)
        path = body.get("path", body.get("path_glob"))
        row = learned.learn_path(body["action_id"], path, TargetSource.ADMIN, self.actor)
        return Response({"path": row.path, "action_id": row.action_id})

    @extend_schema(
        request=s.PathRequestSerializer,
        responses={200: s.RemovedSerializer, **_errors(e400="invalid_request, invalid_path")},
        tags=["gate"],
        summary="Forget a learned path",
        operation_id="gate_paths_remove",
    )
    def delete(self, request):
        body = self.body(s.PathRequestSerializer)
        path = body.get("path", body.get("path_glob"))
        return Response({"removed": learned.forget_path(body["action_id"], path, actor=self.actor)})


class PathsClearView(OperatorView):
    @extend_schema(
        parameters=[ACTION_FILTER],
        responses={200: s.ClearedSerializer, **_errors()},
        tags=["gate"],
        summary="Forget every learned path (of one action with ?action=)",
        operation_id="gate_paths_clear",
    )
    def delete(self, request):
        count = learned.clear_paths(actor=self.actor, action_id=action_filter(request))
        return Response({"cleared": True, "deleted_count": count})


# --- reload ------------------------------------------------------------------------------------


class ReloadView(OperatorView):
    @extend_schema(
        request=None,
        responses={200: s.ReloadSerializer, **_errors(e500="reload_failed: the previous configuration stays active")},
        tags=["gate"],
        summary="Re-read the manifests and the policy; all or nothing",
        operation_id="gate_reload",
    )
    def post(self, request):
        try:
            result = reload(actor=self.actor)
        except (ManifestError, PolicyError) as exc:
            logger.error("gate reload refused: %s", exc)  # also in the audit record and the ledger
            raise APIError(500, "reload_failed") from exc
        return Response(
            {
                "manifests_loaded": result.manifests_loaded,
                "policy_reloaded": result.policy_reloaded,
                "reloaded_at": rfc3339_isoformat(result.reloaded_at),
            }
        )
