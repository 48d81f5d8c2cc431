"""Step 6: the body — strict UTF-8 JSON, within the action's size limit, valid against its
request schema — and the request's hash (RFC 8785, as LatchGate's clients compute it)."""

import hashlib

from rest_framework.exceptions import ParseError

from envelopes.gate.steps.call import Call
from evidence.canonical import canonical_json
from governance.api.parsers import parse_strict_json
from governance.errors import GateError


def read_body(call: Call) -> None:
    manifest = call.manifest
    raw = call.request.body
    if len(raw) > manifest.io.max_request_bytes:
        raise GateError(413, "request_too_large")
    try:
        body = parse_strict_json(raw)
    except ParseError as exc:
        raise GateError(400, "invalid_request", reason=str(exc.detail)) from exc
    problem = manifest.request_problem(body)
    if problem:
        raise GateError(422, "schema_violation", reason=problem)
    call.body = body
    call.request_hash = request_hash(body)


def request_hash(body) -> str:
    """``sha256:`` + hex SHA-256 of the body's RFC 8785 form (approval re-checks it too)."""
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()
