"""GBX's entitlement and seal API (``/api/entitlement/...``, ``/api/seal/verify``): each view
parses, names the holder, calls one service, renders. docs/entitlements.md has the bodies."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from entitlements.api.base import GBXView, fields
from entitlements.api.parsers import SVGParser, seal_upload
from entitlements.services import issuance, redemption, runs
from entitlements.services.issuers import authenticate_issuer
from evidence.seals import SealBundle, SealUnreadable, bundle_zip, verify_seal
from governance.api.parsers import StrictJSONParser
from governance.errors import Invalid
from governance.timestamps import parse_rfc3339, rfc3339_isoformat

TAGS = ["entitlements"]


def _entitlement(entitlement) -> dict:
    return {
        "entitlement_id": entitlement.entitlement_id,
        "principal": entitlement.principal,
        "plan_id": entitlement.plan_id,
        "runs_total": entitlement.runs_total,
        "runs_remaining": entitlement.runs_remaining,
        "expires_at": rfc3339_isoformat(entitlement.expires_at),
        "status": entitlement.status,
    }


def _bundle(bundle: SealBundle) -> dict:
    return {
        "seal_id": bundle.seal_id,
        "seal_json": bundle.seal_json,
        "seal_sig": bundle.seal_sig,
        "seal_svg": bundle.seal_svg,
        "public_key_pem": bundle.public_key_pem,
        "verify_md": bundle.verify_md,
    }


class IssueView(GBXView):
    @extend_schema(
        summary="Issue entitlement runs to a principal (X-GBX-ADMIN-TOKEN)",
        operation_id="gbx_entitlement_issue",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        caller = self.holder
        issuer = authenticate_issuer(request.headers.get("X-GBX-ADMIN-TOKEN"))
        data = fields(self.body(), ("principal", "plan_id", "runs_total", "expires_at"))
        if not isinstance(data["expires_at"], str):
            raise Invalid("must be an RFC 3339 timestamp", field="expires_at")
        try:
            expires_at = parse_rfc3339(data["expires_at"])
        except ValueError as exc:
            raise Invalid(str(exc), field="expires_at") from None
        entitlement = issuance.issue_runs(
            issuer.organization_id,
            principal=data["principal"],
            plan_id=data["plan_id"],
            runs_total=data["runs_total"],
            expires_at=expires_at,
            issued_by=caller.principal,
        )
        return Response(_entitlement(entitlement), status=201)


class CheckView(GBXView):
    @extend_schema(
        summary="Is a run available for this run_id?",
        operation_id="gbx_entitlement_check",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        run_id = fields(self.body(), ("run_id",))["run_id"]
        available = runs.check(self.holder, run_id)
        return Response(
            {
                "allowed": True,
                "entitlement_id": available.entitlement.entitlement_id,
                "runs_remaining": available.runs_remaining,
                "expires_at": rfc3339_isoformat(available.expires_at),
            }
        )


class ConsumeView(GBXView):
    @extend_schema(
        summary="Consume one run for this run_id",
        operation_id="gbx_entitlement_consume",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        run_id = fields(self.body(), ("run_id",))["run_id"]
        taken = runs.consume(self.holder, run_id)
        return Response(
            {
                "entitlement_id": taken.entitlement.entitlement_id,
                "run_id": run_id,
                "runs_remaining": taken.runs_remaining,
            }
        )


class RunStartView(GBXView):
    @extend_schema(
        summary="Record a run's start: inputs, image, project",
        operation_id="gbx_entitlement_run_start",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        data = fields(self.body(), ("run_id", "inputs_sha256", "container_image", "project_id"))
        run = runs.run_start(
            self.holder,
            data["run_id"],
            inputs_sha256=data["inputs_sha256"],
            container_image=data["container_image"],
            project_id=data["project_id"],
        )
        return Response(
            {
                "run_id": run.run_id,
                "entitlement_id": run.entitlement.entitlement_id,
                "state": run.state,
                "started_at": rfc3339_isoformat(run.started_at),
            }
        )


class RunCompleteView(GBXView):
    @extend_schema(
        summary="Record a run's completion and receive its seal bundle",
        operation_id="gbx_entitlement_run_complete",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        data = fields(self.body(), ("run_id", "outputs_sha256", "run_manifest_sha256"))
        _run, bundle = runs.run_complete(
            self.holder,
            data["run_id"],
            outputs_sha256=data["outputs_sha256"],
            run_manifest_sha256=data["run_manifest_sha256"],
        )
        return Response(_bundle(bundle))


class SealZipView(GBXView):
    @extend_schema(
        summary="A sealed run's bundle as a zip (seal.json, seal.sig, seal.svg, public_key.pem, VERIFY.md)",
        operation_id="gbx_entitlement_seal_zip",
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        tags=TAGS,
    )
    def get(self, request, run_id):
        run = runs.sealed_run(self.holder, run_id)
        bundle = runs.bundle_of(run)
        response = HttpResponse(bundle_zip(bundle), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="seal-{run.seal_id}.zip"'
        return response


# A seal over 1 MiB is GBX's 400, not the transport's 413: the body limit of these two views is
# above it (multipart framing included) and the parsers refuse what is over 1 MiB.
SEAL_BODY_LIMIT = 4 * 1024 * 1024


class SealVerifyView(GBXView):
    parser_classes = [MultiPartParser, SVGParser, StrictJSONParser]
    max_body_bytes = SEAL_BODY_LIMIT

    @extend_schema(
        summary="Verify a seal.svg (multipart field 'seal', or an image/svg+xml body)",
        operation_id="gbx_seal_verify",
        request={"multipart/form-data": OpenApiTypes.OBJECT, "image/svg+xml": OpenApiTypes.BINARY},
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        try:
            verification = verify_seal(seal_upload(request))
        except SealUnreadable as exc:
            raise Invalid(str(exc), code="seal_unreadable") from None
        return Response(verification.as_dict())


class RedeemSealView(GBXView):
    parser_classes = [MultiPartParser, SVGParser, StrictJSONParser]
    max_body_bytes = SEAL_BODY_LIMIT

    @extend_schema(
        summary="Redeem a verified seal for one rerun, once per principal",
        operation_id="gbx_entitlement_redeem_seal_once",
        request={"multipart/form-data": OpenApiTypes.OBJECT, "image/svg+xml": OpenApiTypes.BINARY},
        responses={200: OpenApiTypes.OBJECT},
        tags=TAGS,
    )
    def post(self, request):
        holder = self.holder
        try:
            redeemed = redemption.redeem_seal_once(holder, seal_upload(request))
        except SealUnreadable as exc:
            raise Invalid(str(exc), code="seal_unreadable") from None
        except redemption.SealNotValid as exc:
            raise Invalid(
                exc.message, code="seal_invalid", status=exc.verification.status, checks=exc.verification.checks
            ) from None
        return Response(
            {
                "entitlement_id": redeemed.entitlement.entitlement_id,
                "runs_remaining": redeemed.runs_remaining,
                "seal_id": redeemed.seal_id,
            }
        )
