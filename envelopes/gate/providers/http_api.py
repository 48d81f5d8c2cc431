"""``builtin:http_api``: render the manifest's template with the request body and call out
through the egress guard.

Placeholders ``{{var}}`` name top-level fields of the request body. In ``url_template`` a
value in the path or query is percent-encoded (it cannot add segments, a query or a
fragment); a template that is one placeholder takes the whole URL as given (the egress
guard vets it); a value in the host part may only hold host characters. In
``body_template`` values are JSON-encoded: a string leaf that is one placeholder becomes the
field's JSON value, embedded placeholders become text. Headers may name secrets,
``{{secret:NAME}}`` or ``{{secret.NAME}}``; their values are asked of the context's secrets provider, never logged,
and redacted from the answer should the target echo them.
"""

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from envelopes.gate.providers import egress
from envelopes.gate.providers.result import (
    PROVIDER_ERROR,
    ProviderContext,
    ProviderResult,
    failed,
)

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
HOST_VALUE = re.compile(r"^[A-Za-z0-9.-]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
REDACTED = "[redacted]"
MIN_REDACTED_SECRET = 4  # shorter values would redact ordinary text


class TemplateError(Exception):
    pass


@dataclass(frozen=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    content: bytes | None = field(repr=False)
    secret_values: tuple[str, ...] = field(default=(), repr=False)


def _secret_name(key: str) -> str | None:
    """The secret a placeholder names: ``{{secret:NAME}}`` or, as the manifests write it,
    ``{{secret.NAME}}``; None for a request field."""
    for prefix in ("secret:", "secret."):
        if key.startswith(prefix):
            return key.removeprefix(prefix).strip()
    return None


def _field(body: Mapping, name: str):
    if _secret_name(name) is not None:
        raise TemplateError("secrets may only be used in headers")
    if name not in body:
        raise TemplateError(f"the request body has no field '{name}' for the template")
    return body[name]


def _text(value, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"field '{name}' must be a string or a number to fill the template")


def render_url(template: str, body: Mapping) -> str:
    whole = PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return _text(_field(body, whole.group(1)), whole.group(1))
    out, position = [], 0
    for match in PLACEHOLDER.finditer(template):
        literal = template[position : match.start()]
        out.append(literal)
        value = _text(_field(body, match.group(1)), match.group(1))
        before = "".join(out)
        after_scheme = before.split("://", 1)[1] if "://" in before else None
        if after_scheme is None or any(c in after_scheme for c in "/?#"):
            out.append(quote(value, safe=""))  # path, query or fragment: one encoded piece
        elif HOST_VALUE.match(value):
            out.append(value)
        else:
            raise TemplateError(f"field '{match.group(1)}' is not a valid host name part")
        position = match.end()
    out.append(template[position:])
    return "".join(out)


def _fill_leaf(text: str, body: Mapping):
    whole = PLACEHOLDER.fullmatch(text.strip())
    if whole:
        return _field(body, whole.group(1))

    def one(match):
        value = _field(body, match.group(1))
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return PLACEHOLDER.sub(one, text)


def _fill(value, body: Mapping):
    if isinstance(value, str):
        return _fill_leaf(value, body) if "{{" in value else value
    if isinstance(value, Mapping):
        return {k: _fill(v, body) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(v, body) for v in value]
    return value


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def render_body(template, body: Mapping) -> tuple[bytes | None, str]:
    """The request's bytes and their default content type."""
    if template is None:
        return None, ""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole:
            value = _field(body, whole.group(1))
            if isinstance(value, str):  # a body the agent passed as text (LatchGate's http_post)
                try:
                    json.loads(value)
                except ValueError:
                    return value.encode(), "text/plain; charset=utf-8"
                return value.encode(), "application/json"
            return _json(value), "application/json"
        try:
            template = json.loads(template)
        except ValueError:
            # Not JSON until filled (``{"n": {{count}}}``): each value goes in as JSON.
            text = PLACEHOLDER.sub(lambda m: json.dumps(_field(body, m.group(1)), ensure_ascii=False), template)
            return text.encode(), "application/json"
    return _json(_fill(template, body)), "application/json"


def render(plan, body: Mapping, secrets=None) -> RenderedRequest:
    """The request the template describes for ``body``; TemplateError when it cannot be
    filled. Without ``secrets`` the headers naming secrets are left out (a preview)."""
    template = plan.template
    if template is None:
        raise TemplateError("the action has no template")
    declared = {s.name: s for s in plan.secrets}
    headers, used = {}, []
    for name, raw in template.headers.items():
        missing_optional = False

        def one(match):
            nonlocal missing_optional
            key = match.group(1)
            secret_name = _secret_name(key)
            if secret_name is not None:
                if secret_name not in declared:
                    raise TemplateError(f"secret {secret_name} is not declared by the action")
                value = secrets(secret_name) if secrets else None
                if not value:
                    if secrets and declared[secret_name].required:
                        raise TemplateError(f"secret {secret_name} is not configured")
                    missing_optional = True
                    return ""
                used.append(value)
                return value
            return _text(_field(body, key), key)

        value = PLACEHOLDER.sub(one, raw)
        if CONTROL.search(value):
            raise TemplateError(f"header {name} would contain control characters")
        if not missing_optional:
            headers[name] = value
    content, content_type = render_body(template.body_template, body)
    if content is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    return RenderedRequest(template.method, render_url(template.url_template, body), headers, content, tuple(used))


def target_url(plan, body: Mapping) -> str:
    """The URL a call would go to (for the pipeline's pre-checks); TemplateError otherwise."""
    return render_url(plan.template.url_template, body) if plan.template else ""


def _redact(value, secrets: tuple[str, ...]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def answer_output(answer: egress.HttpAnswer, secrets: tuple[str, ...] = ()) -> dict:
    """``{status, headers, body}``: body parsed when the answer is JSON, else text."""
    secrets = tuple(s for s in secrets if len(s) >= MIN_REDACTED_SECRET)
    text = answer.content.decode("utf-8", "replace")
    media = answer.content_type.split(";", 1)[0].strip().lower()
    body = _redact(text, secrets)
    if media == "application/json" or media.endswith("+json"):
        with contextlib.suppress(ValueError):
            body = json.loads(body)
            if secrets:  # nothing to redact otherwise: the parse is a fresh value already
                body = _redact(body, secrets)
    return {"status": answer.status, "headers": _redact(answer.headers, secrets), "body": body}


def run(plan, body: Mapping, context: ProviderContext) -> ProviderResult:
    """Call out and wait (a caller that blocks: Django's view)."""
    prepared = _prepare(plan, body, context)
    if isinstance(prepared, ProviderResult):
        return prepared
    request, rules = prepared
    try:
        answer = egress.send(rules, request.method, request.url, headers=request.headers, content=request.content)
    except egress.EgressError as exc:
        return _refused(exc)
    return _result(request, answer)


async def run_async(plan, body: Mapping, context: ProviderContext) -> ProviderResult:
    """``run`` on the running event loop (the hot path)."""
    prepared = _prepare(plan, body, context)
    if isinstance(prepared, ProviderResult):
        return prepared
    request, rules = prepared
    try:
        answer = await egress.send_async(
            rules, request.method, request.url, headers=request.headers, content=request.content
        )
    except egress.EgressError as exc:
        return _refused(exc)
    return _result(request, answer)


def _prepare(plan, body: Mapping, context: ProviderContext):
    try:
        request = render(plan, body, secrets=context.secrets or (lambda _name: None))
    except TemplateError as exc:
        return failed(PROVIDER_ERROR, str(exc))
    return request, egress.EgressRules.for_plan(plan)


def _refused(exc: egress.EgressError) -> ProviderResult:
    return failed(exc.failure_class, str(exc))  # policy_violation, provider_error or timeout


def _result(request: RenderedRequest, answer: egress.HttpAnswer) -> ProviderResult:
    seen = {"method": request.method, "host": answer.host, "status": answer.status}
    return ProviderResult(
        output=answer_output(answer, request.secret_values),
        summary=f"HTTP {answer.status}",
        effect_evidence=(seen,),
        observed=({"kind": "http", **seen},),
    )
