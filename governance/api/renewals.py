"""Offline renewal bundles over HTTP (docs/renewals.md):

- ``POST /governance/lease/offline-renew`` — a launcher applies a bundle (wallet session);
- ``POST /governance/renewal-bundles`` — an org admin (platform.admin or platform.operator)
  creates one;
- ``GET /governance/signer-keys`` — the Ed25519 keys bundles and packages verify with, for
  anyone.

Errors are edut's ``{"error": code, "code": code, "correlation_id": "req_..."}`` with the
statuses of ``INSTALL_STATUS``; every answer carries ``X-Correlation-ID``.
"""

import logging

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from governance.api.authentication import OPERATOR_KEY
from governance.api.errors import APIError
from governance.api.install_errors import INSTALL_STATUS
from governance.api.installs import WalletSessionView
from governance.api.permissions import HasRole, credential_of
from governance.api.request_meta import correlation_id_of
from governance.api.tenancy import request_organization
from governance.api.wallets import ERROR_BODY, CorrelatedView, wallet_error
from governance.choices import Role
from governance.models import Person, Principal
from governance.services.install_rules import InstallRefused
from governance.services.renewals import Issuer, apply_offline_renewal, create_renewal_bundle
from governance.services.runtime_packages import published_keys
from governance.timestamps import parse_rfc3339, rfc3339_isoformat

logger = logging.getLogger(__name__)

APPLY_FIELDS = frozenset({"wallet", "org_root_id", "principal_id", "renewal_bundle"})
BUNDLE_FIELDS = frozenset({"bundle_id", "signed_payload"})
CREATE_FIELDS = frozenset({"org_root_id", "principal_id", "wallet", "renewed_until", "valid_until"})
CREATE_REQUIRED = frozenset({"principal_id", "wallet", "renewed_until"})


def json_object(request, value, allowed: frozenset, required: frozenset, where: str = "the body") -> dict:
    """``value`` as a JSON object of ``allowed`` members with every ``required`` one; else
    400 ``invalid_request`` naming the first problem."""
    if not isinstance(value, dict):
        raise wallet_error(request, 400, "invalid_request", f"{where} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise wallet_error(request, 400, "invalid_request", f"unknown field {unknown[0][:60]}")
    missing = sorted(required - set(value))
    if missing:
        raise wallet_error(request, 400, "invalid_request", f"{missing[0]}: this field is required")
    return value


# --- applying ----------------------------------------------------------------------------------


class RenewalBundleRefSerializer(serializers.Serializer):
    bundle_id = serializers.CharField(help_text="rb_ and a ULID")
    signed_payload = serializers.CharField(help_text="base64: and the signed document (docs/renewals.md)")


class OfflineRenewRequestSerializer(serializers.Serializer):
    """Documents the body; unknown fields are 400 ``invalid_request``."""

    wallet = serializers.CharField(help_text="The ownership wallet; the wallet session's.")
    org_root_id = serializers.CharField()
    principal_id = serializers.CharField()
    renewal_bundle = RenewalBundleRefSerializer()


class OfflineRenewView(WalletSessionView):
    max_body_bytes = 16 * 1024

    @extend_schema(
        request=OfflineRenewRequestSerializer,
        responses={
            200: inline_serializer(
                "OfflineRenewal",
                {
                    "status": serializers.CharField(help_text="renewal_applied"),
                    "availability_state": serializers.CharField(help_text="active"),
                    "renewed_until": serializers.CharField(help_text="RFC 3339 in UTC (2027-02-18T00:00:00Z)"),
                },
            ),
            400: OpenApiResponse(
                ERROR_BODY, description="invalid_request, renewal_bundle_invalid, renewal_bundle_expired"
            ),
            401: OpenApiResponse(ERROR_BODY, description="wallet_session_invalid"),
            403: OpenApiResponse(
                ERROR_BODY,
                description="wallet_mismatch, wallet_not_owner, membership_inactive, entitlement_inactive",
            ),
            404: OpenApiResponse(
                ERROR_BODY, description="organization_not_found, principal_not_found, device_not_found"
            ),
            409: OpenApiResponse(ERROR_BODY, description="renewal_bundle_used"),
        },
        examples=[
            OpenApiExample(
                "edut's launcher",
                request_only=True,
                value={
                    "wallet": "0x742d35Cc6634C0532925a3b844Bc454e4438f44e",
                    "org_root_id": "org.acme.root",
                    "principal_id": "human.joshua",
                    "renewal_bundle": {
                        "bundle_id": "rb_01J9B6D4R0E4W8N6H2A1Q9V7PT",
                        "signed_payload": "base64:eyJwYXlsb2FkIjp7...",
                    },
                },
            )
        ],
        tags=["installs"],
        summary="Apply an offline renewal bundle to the wallet's devices (once)",
    )
    def post(self, request):
        body = json_object(request, request.data, APPLY_FIELDS, APPLY_FIELDS)
        bundle = json_object(request, body["renewal_bundle"], BUNDLE_FIELDS, BUNDLE_FIELDS, "renewal_bundle")
        applied = apply_offline_renewal(
            session_wallet=self.session_wallet(),
            wallet=body["wallet"],
            org_root_id=body["org_root_id"],
            principal_id=body["principal_id"],
            bundle_id=bundle["bundle_id"],
            signed_payload=bundle["signed_payload"],
        )
        logger.info(
            "offline renewal %s applied to %s (%s)",
            applied.bundle.bundle_id,
            ", ".join(applied.device_ids),
            correlation_id_of(request),
        )
        return Response(
            {
                "status": "renewal_applied",
                "availability_state": "active",
                "renewed_until": rfc3339_isoformat(applied.renewed_until),
            }
        )


# --- creating ----------------------------------------------------------------------------------


class CreateRenewalBundleSerializer(serializers.Serializer):
    """Documents the body; unknown fields are 400 ``invalid_request``."""

    org_root_id = serializers.CharField(required=False, help_text="The caller's organization root (checked).")
    principal_id = serializers.CharField()
    wallet = serializers.CharField(help_text="An ownership wallet of the principal.")
    renewed_until = serializers.CharField(help_text="RFC 3339; at most MANDATE_RENEWAL_MAX_DAYS ahead.")
    valid_until = serializers.CharField(required=False, help_text="RFC 3339; default and at most renewed_until.")


def _moment(request, body: dict, name: str):
    value = body.get(name)
    if value is None and name not in CREATE_REQUIRED:
        return None
    if isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except ValueError:
            pass
    raise wallet_error(request, 400, "invalid_request", f"{name}: must be an RFC 3339 timestamp with its offset")


def issuer_of(request) -> Issuer:
    """Who creates: the person behind a token or a session, an operator key, or (open mode) no one."""
    if isinstance(request.user, Person):
        return Issuer.of_person(request.user)
    credential = credential_of(request)
    if credential is not None and credential.kind == OPERATOR_KEY:
        return Issuer(credential.subject_id, "operator", credential.subject_id)
    return Issuer("anonymous", "system", "anonymous")


class RenewalBundlesView(CorrelatedView):
    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_ADMIN, Role.PLATFORM_OPERATOR)
    max_body_bytes = 16 * 1024

    def handle_exception(self, exc):
        if isinstance(exc, InstallRefused):
            exc = wallet_error(self.request, INSTALL_STATUS.get(exc.code, 400), exc.code, exc.message)
        return super().handle_exception(exc)

    @extend_schema(
        request=CreateRenewalBundleSerializer,
        responses={
            201: inline_serializer(
                "CreatedRenewalBundle",
                {
                    "bundle_id": serializers.CharField(),
                    "org_root_id": serializers.CharField(),
                    "principal_id": serializers.CharField(),
                    "wallet": serializers.CharField(),
                    "renewed_until": serializers.CharField(),
                    "valid_until": serializers.CharField(),
                    "signing_key_id": serializers.CharField(),
                    "signed_payload": serializers.CharField(),
                },
            ),
            400: OpenApiResponse(ERROR_BODY, description="invalid_request, address_checksum_invalid"),
            403: OpenApiResponse(ERROR_BODY, description="permission_denied, wallet_not_owner, membership_inactive"),
            404: OpenApiResponse(ERROR_BODY, description="organization_not_found, principal_not_found"),
        },
        tags=["installs"],
        summary="Create a signed offline renewal bundle for a principal's wallet",
    )
    def post(self, request):
        body = json_object(request, request.data, CREATE_FIELDS, CREATE_REQUIRED)
        try:
            organization = request_organization(request)
        except APIError as exc:
            raise wallet_error(request, 403, "forbidden", str(exc.error)) from None
        org_root_id = body.get("org_root_id", organization.org_root_id)
        if org_root_id is None or org_root_id != organization.org_root_id:
            raise wallet_error(request, 404, "organization_not_found", "not the caller's organization root")
        principal_id = body["principal_id"]
        principal = (
            Principal.objects.select_related("organization")
            .filter(organization=organization, principal_id=principal_id)
            .first()
            if isinstance(principal_id, str)
            else None
        )
        if principal is None:
            raise wallet_error(request, 404, "principal_not_found", f"no such principal in {org_root_id}")
        bundle = create_renewal_bundle(
            principal,
            body["wallet"],
            _moment(request, body, "renewed_until"),
            _moment(request, body, "valid_until"),
            created_by=issuer_of(request),
        )
        logger.info("renewal bundle %s created (%s)", bundle.bundle_id, correlation_id_of(request))
        return Response(
            {
                "bundle_id": bundle.bundle_id,
                "org_root_id": organization.org_root_id,
                "principal_id": principal.principal_id,
                "wallet": bundle.wallet,
                "renewed_until": rfc3339_isoformat(bundle.renewed_until),
                "valid_until": rfc3339_isoformat(bundle.valid_until),
                "signing_key_id": bundle.signing_key_id,
                "signed_payload": bundle.signed_payload,
            },
            status=201,
        )


# --- the published keys ------------------------------------------------------------------------


class SignerKeysView(CorrelatedView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SignerKeys",
                {
                    "keys": serializers.ListField(
                        child=serializers.DictField(),
                        help_text="JWKs (kty OKP, crv Ed25519, x, kid, alg EdDSA, use sig; signer mandate|external; "
                        "an external key's status active|retired)",
                    )
                },
            )
        },
        tags=["installs"],
        summary="The Ed25519 keys renewal bundles and runtime packages verify with (offline)",
    )
    def get(self, request):
        return Response({"keys": published_keys()})
