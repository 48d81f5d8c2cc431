"""``/governance/install/token``, ``/confirm`` and ``/status``: edut's governance installer
over a wallet session (``Authorization: Bearer mws_...``). Refusals are edut's body
``{"error": code, "code": code, "correlation_id": "req_..."}`` with the status of
``INSTALL_STATUS``; every answer carries ``X-Correlation-ID`` (docs/installs.md)."""

import logging

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from governance.api.authentication import WalletSessionAuthentication, wallet_session_of
from governance.api.install_errors import INSTALL_STATUS
from governance.api.permissions import IsAuthenticatedPrincipal
from governance.api.request_meta import correlation_id_of
from governance.api.wallets import ERROR_BODY, CorrelatedView, wallet_error
from governance.services.install_rules import InstallRefused
from governance.services.installs import activation_status, confirm_install, install_status, issue_install_token
from governance.timestamps import rfc3339_isoformat

logger = logging.getLogger(__name__)


class WalletSessionView(CorrelatedView):
    """A view of the installer: a wallet session is required, and the services' refusals
    answer in edut's shape."""

    authentication_classes = [WalletSessionAuthentication]
    permission_classes = [IsAuthenticatedPrincipal]

    def session_wallet(self) -> str:
        return wallet_session_of(self.request).wallet

    def handle_exception(self, exc):
        if isinstance(exc, InstallRefused):
            logger.info("installer refused: %s (%s)", exc.code, correlation_id_of(self.request))
            exc = wallet_error(self.request, INSTALL_STATUS.get(exc.code, 400), exc.code, str(exc))
        elif isinstance(exc, exceptions.NotAuthenticated):
            exc = wallet_error(self.request, 401, "wallet_session_invalid", "a wallet session is required")
        return super().handle_exception(exc)


def _refusals(*statuses: int) -> dict:
    described = {
        400: "invalid_request, address_checksum_invalid, launcher_receipt_invalid",
        401: "wallet_session_invalid",
        403: "wallet_mismatch, wallet_not_owner, membership_inactive, role_not_permitted, "
        "entitlement_inactive, availability_parked",
        404: "organization_not_found, principal_not_found, package_not_found, device_not_found",
        409: "install_token_stale, package_hash_mismatch, policy_mismatch",
    }
    return {status: OpenApiResponse(ERROR_BODY, description=described[status]) for status in statuses}


PACKAGE = inline_serializer(
    "RuntimePackageOffer",
    {
        "runtime_version": serializers.CharField(),
        "package_url": serializers.URLField(),
        "package_hash": serializers.CharField(),
        "signature": serializers.CharField(help_text="ed25519:<hex> over the canonical package descriptor"),
        "signer_key_id": serializers.CharField(help_text="kid in GET /governance/signer-keys"),
        "policy_hash": serializers.CharField(),
        "rollout_channel": serializers.CharField(),
    },
)
TOKEN_REQUEST = inline_serializer(
    "InstallTokenRequest",
    {
        "wallet": serializers.CharField(),
        "org_root_id": serializers.CharField(),
        "principal_id": serializers.CharField(),
        "principal_role": serializers.CharField(),
        "device_id": serializers.CharField(),
        "launcher_version": serializers.CharField(),
        "platform": serializers.CharField(),
        "current_runtime_version": serializers.CharField(required=False),
        "rollout_channel": serializers.CharField(required=False, help_text="default: the device's, else stable"),
    },
)


def package_offer(package) -> dict:
    return {
        "runtime_version": package.runtime_version,
        "package_url": package.package_url,
        "package_hash": package.package_hash,
        "signature": package.signature,
        "signer_key_id": package.signer_key_id,
        "policy_hash": package.policy_hash,
        "rollout_channel": package.rollout_channel,
    }


class InstallTokenView(WalletSessionView):
    @extend_schema(
        request=TOKEN_REQUEST,
        responses={
            200: inline_serializer(
                "InstallToken",
                {
                    "install_token": serializers.CharField(help_text="git_ + ULID, single use, shown once"),
                    "install_token_expires_at": serializers.DateTimeField(),
                    "wallet": serializers.CharField(),
                    "entitlement_id": serializers.CharField(),
                    "package": PACKAGE,
                },
            ),
            **_refusals(400, 401, 403, 404),
        },
        tags=["installs"],
        summary="An install token and the package for the device",
    )
    def post(self, request):
        issued = issue_install_token(self.session_wallet(), request.data)
        record = issued.record
        return Response(
            {
                "install_token": issued.token,
                "install_token_expires_at": rfc3339_isoformat(record.expires_at),
                "wallet": record.wallet,
                "entitlement_id": record.entitlement_id,
                "package": package_offer(record.package),
            }
        )


class InstallConfirmView(WalletSessionView):
    @extend_schema(
        request=inline_serializer(
            "InstallConfirmRequest",
            {
                "install_token": serializers.CharField(),
                "wallet": serializers.CharField(),
                "device_id": serializers.CharField(),
                "entitlement_id": serializers.CharField(),
                "package_hash": serializers.CharField(),
                "runtime_version": serializers.CharField(),
                "installed_at": serializers.DateTimeField(),
                "launcher_receipt_hash": serializers.CharField(),
                "policy_hash": serializers.CharField(required=False),
            },
        ),
        responses={
            200: inline_serializer(
                "InstallConfirmed",
                {
                    "status": serializers.CharField(help_text="governance_active"),
                    "wallet": serializers.CharField(),
                    "device_id": serializers.CharField(),
                    "entitlement_id": serializers.CharField(),
                    "runtime_version": serializers.CharField(),
                    "activated_at": serializers.DateTimeField(),
                },
            ),
            **_refusals(400, 401, 403, 409),
        },
        tags=["installs"],
        summary="Confirm an install: the device's governance becomes active",
    )
    def post(self, request):
        confirmed = confirm_install(self.session_wallet(), request.data)
        device = confirmed.device
        return Response(
            {
                "status": "governance_active",
                "wallet": device.wallet,
                "device_id": device.device_id,
                "entitlement_id": confirmed.token.entitlement_id,
                "runtime_version": device.runtime_version,
                "activated_at": rfc3339_isoformat(device.activated_at),
            }
        )


class InstallStatusView(WalletSessionView):
    @extend_schema(
        parameters=[
            OpenApiParameter("wallet", str, required=True),
            OpenApiParameter("device_id", str, required=True),
        ],
        responses={
            200: inline_serializer(
                "InstallStatus",
                {
                    "wallet": serializers.CharField(),
                    "org_root_id": serializers.CharField(),
                    "principal_id": serializers.CharField(),
                    "principal_role": serializers.CharField(),
                    "membership_status": serializers.CharField(),
                    "identity_assurance_level": serializers.CharField(),
                    "entitlement_status": serializers.CharField(),
                    "access_class": serializers.CharField(),
                    "availability_state": serializers.CharField(),
                    "activation_status": serializers.CharField(),
                    "latest_runtime_version": serializers.CharField(allow_null=True),
                    "policy_hash": serializers.CharField(allow_null=True),
                },
            ),
            **_refusals(400, 401, 403, 404),
        },
        tags=["installs"],
        summary="Where a wallet's device stands",
    )
    def get(self, request):
        unknown = set(request.query_params) - {"wallet", "device_id"}
        if unknown:
            raise InstallRefused("invalid_request", f"{sorted(unknown)[0]}: unknown query parameter")
        status = install_status(
            self.session_wallet(), request.query_params.get("wallet"), request.query_params.get("device_id")
        )
        device, principal, latest = status.device, status.principal, status.latest_package
        return Response(
            {
                "wallet": device.wallet,
                "org_root_id": principal.organization.org_root_id,
                "principal_id": principal.principal_id,
                "principal_role": principal.role,
                "membership_status": principal.membership_status,
                "identity_assurance_level": principal.identity_assurance_level,
                "entitlement_status": status.entitlement_status,
                "access_class": device.access_class,
                "availability_state": device.availability_state,
                "activation_status": activation_status(device),
                "latest_runtime_version": latest.runtime_version if latest else None,
                "policy_hash": device.policy_hash or (latest.policy_hash if latest else None),
            }
        )
