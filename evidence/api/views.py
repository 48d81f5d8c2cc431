from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from evidence.services.keys import jwks
from evidence.services.receipts import verify_receipts
from evidence.services.verification import verify_ledger
from governance.api.permissions import HasRole
from governance.choices import Role


class JWKSView(APIView):
    """Public keys of every signing key, active and retired (RFC 7517 JWK Set)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer("JWKS", {"keys": serializers.ListField(child=serializers.DictField())}),
        tags=["evidence"],
    )
    def get(self, request):
        return Response(jwks(), headers={"Cache-Control": "public, max-age=300"})


class LedgerVerifyView(APIView):
    """LatchGate's ``GET /v1/audit/verify``: walk the whole ledger and report the first break,
    then check every gate receipt (its content re-hashes to its signed ``result_hash``)."""

    permission_classes = [HasRole]
    required_roles = (Role.PLATFORM_OPERATOR, Role.PLATFORM_ADMIN)
    required_permission = "audit:verify"

    @extend_schema(
        responses=inline_serializer(
            "LedgerVerification",
            {
                "intact": serializers.BooleanField(),
                "events_checked": serializers.IntegerField(),
                "broken_at": serializers.IntegerField(allow_null=True),
                "receipts_checked": serializers.IntegerField(),
                "error_kind": serializers.CharField(required=False),
                "broken_receipt": inline_serializer(
                    "BrokenReceipt",
                    {"receipt_id": serializers.CharField(), "signature_status": serializers.CharField()},
                    required=False,
                ),
            },
        ),
        tags=["evidence"],
    )
    def get(self, request):
        verdict = verify_ledger()
        receipts = verify_receipts()
        body = {
            "intact": verdict.valid and receipts.valid,
            "events_checked": verdict.events_checked,
            "broken_at": verdict.broken_at,
            "receipts_checked": receipts.receipts_checked,
        }
        if not verdict.valid:
            body["error_kind"] = verdict.error_kind
        if not receipts.valid:
            body.setdefault("error_kind", "receipt_invalid")
            body["broken_receipt"] = {"receipt_id": receipts.broken_receipt_id, "signature_status": receipts.status}
        return Response(body)
