"""Bundle documents: parsing YAML and validating each kind into normalized fields.

A document normalizes to ``fields`` (model field values) and ``spec`` (a flat dict of
JSON values under MIDAS-style names, stored on the model). Two applies of the same
document produce the same ``spec``, which is how ``unchanged`` and version diffs work.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import yaml

from controlplane.choices import (
    AGENT_TYPE_ALIASES,
    AgentType,
    BusinessServiceStatus,
    ConsequenceType,
    EscalationMode,
    FailMode,
    GrantStatus,
    Kind,
    OperationalState,
    ProfileStatus,
    RiskRating,
    RiskTier,
    ServiceType,
    StructuralStatus,
    SurfaceStatus,
    is_resource_id,
)
from controlplane.services.policies import PACKAGE_NAME, PolicyError, compile_check
from governance import ijson
from governance.timestamps import parse_iso_timestamp, rfc3339

API_VERSIONS = frozenset({"midas.accept.io/v1", "mandate/v1"})
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_NODES = 2_000_000  # bounds alias expansion ("billion laughs") while walking documents

try:  # libyaml when present: ~10x faster for large bundles
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader


class BundleSyntaxError(Exception):
    """The body is not a YAML bundle at all (HTTP 400)."""


@dataclass
class Reference:
    kind: str
    id: str
    field: str


@dataclass
class Document:
    index: int  # 1-based position in the bundle
    kind: str = ""
    id: str = ""
    fields: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    references: list[Reference] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    requested_status: str | None = None  # a Profile's lifecycle.status (declared; new versions start in review)

    def error(self, field_name: str, message: str) -> None:
        self.errors.append({"kind": self.kind, "id": self.id, "field": field_name, "message": message})


def _count_nodes(value, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise BundleSyntaxError("bundle is too large or too deeply aliased")
    if isinstance(value, dict):
        for key, item in value.items():
            _count_nodes(key, budget)
            _count_nodes(item, budget)
    elif isinstance(value, list):
        for item in value:
            _count_nodes(item, budget)


def parse_bundle(body: bytes | str) -> list[Document]:
    """Parse and validate every document; raise BundleSyntaxError for malformed YAML."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        raw_documents = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise BundleSyntaxError(f"malformed YAML: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    except RecursionError as exc:
        raise BundleSyntaxError("malformed YAML: nesting too deep") from exc
    if not raw_documents:
        raise BundleSyntaxError("bundle contains no documents")
    budget = [MAX_NODES]
    try:
        for raw in raw_documents:
            _count_nodes(raw, budget)
    except RecursionError as exc:
        raise BundleSyntaxError("malformed YAML: nesting too deep") from exc
    return [validate_document(index, raw) for index, raw in enumerate(raw_documents, start=1)]


# --- field readers: each records an error and returns a default when the value is wrong ----


class _Reader:
    def __init__(self, doc: Document, spec: dict):
        self.doc = doc
        self.spec = spec

    def _get(self, path: str):
        node = self.spec
        for part in path.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def text(self, path: str, *, required=False, default="", max_length=10000) -> str:
        value = self._get(path)
        if value is None or value == "":
            if required:
                self.doc.error(f"spec.{path}", f"{path} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.doc.error(f"spec.{path}", f"{path} must be a string")
            return default
        value = str(value).strip()
        if len(value) > max_length:
            self.doc.error(f"spec.{path}", f"{path} must be at most {max_length} characters")
            return default
        return value

    def choice(self, path: str, choices, *, required=False, default="") -> str:
        value = self.text(path, required=required, default=default)
        if value and value not in choices:
            self.doc.error(f"spec.{path}", f"{path} must be one of {', '.join(sorted(choices))}")
            return default
        return value

    def ref(self, path: str, kind: str, *, required=False) -> str:
        value = self.text(path, required=required, max_length=255)
        if value:
            if not is_resource_id(value):
                self.doc.error(f"spec.{path}", f"{path} must be a valid identifier")
                return ""
            self.doc.references.append(Reference(kind, value, f"spec.{path}"))
        return value

    def unit(self, path: str, *, required=False, default=None) -> float | None:
        value = self._get(path)
        if value is None:
            if required:
                self.doc.error(f"spec.{path}", f"{path} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.doc.error(f"spec.{path}", f"{path} must be a number")
            return default
        if not 0.0 <= float(value) <= 1.0:
            self.doc.error(f"spec.{path}", f"{path} must be between 0.0 and 1.0")
            return default
        return float(value)

    def timestamp(self, path: str) -> datetime | None:
        value = self._get(path)
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str):
            try:
                moment = parse_iso_timestamp(value)
            except ValueError:
                self.doc.error(f"spec.{path}", f"{path} must be an RFC 3339 timestamp")
                return None
        else:
            self.doc.error(f"spec.{path}", f"{path} must be an RFC 3339 timestamp")
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def string_list(self, path: str) -> list[str]:
        value = self._get(path)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            self.doc.error(f"spec.{path}", f"{path} must be a list of strings")
            return []
        return [item.strip() for item in value]

    def json_list(self, path: str) -> list:
        value = self._get(path)
        if value is None:
            return []
        if not isinstance(value, list):
            self.doc.error(f"spec.{path}", f"{path} must be a list")
            return []
        return _jsonable(value)


def _jsonable(value):
    """YAML may produce dates and datetimes; keep everything JSON-native."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# --- per-kind validation ---------------------------------------------------------------


def _business_service(r: _Reader) -> dict:
    external = r.spec.get("external_ref")
    if external is not None and not isinstance(external, str | dict):
        r.doc.error("spec.external_ref", "external_ref must be a string or a mapping")
        external = None
    return {
        "service_type": r.choice("service_type", ServiceType.values, default=ServiceType.INTERNAL),
        "regulatory_scope": r.text("regulatory_scope", max_length=255),
        "status": r.choice("status", BusinessServiceStatus.values, default=BusinessServiceStatus.ACTIVE),
        "owner_id": r.text("owner_id", max_length=255),
        "external_ref": _jsonable(external),
    }


def _capability(r: _Reader) -> dict:
    return {
        "status": r.choice("status", StructuralStatus.values, default=StructuralStatus.ACTIVE),
        "owner": r.text("owner", max_length=255),
        "parent_capability_id": r.ref("parent_capability_id", Kind.CAPABILITY),
    }


def _business_service_capability(r: _Reader) -> dict:
    return {
        "business_service_id": r.ref("business_service_id", Kind.BUSINESS_SERVICE, required=True),
        "capability_id": r.ref("capability_id", Kind.CAPABILITY, required=True),
    }


def _process(r: _Reader) -> dict:
    return {
        "business_service_id": r.ref("business_service_id", Kind.BUSINESS_SERVICE, required=True),
        "parent_process_id": r.ref("parent_process_id", Kind.PROCESS),
        "status": r.choice("status", StructuralStatus.values, default=StructuralStatus.ACTIVE),
        "owner": r.text("owner", max_length=255),
    }


def _required_context_fields(r: _Reader) -> list[dict]:
    raw = r._get("required_context.fields")
    if raw is None:
        raw = r._get("required_context")
        if isinstance(raw, dict) or raw is None:
            raw = [] if raw is None else raw.get("fields") or []
    if not isinstance(raw, list):
        r.doc.error("spec.required_context.fields", "required_context.fields must be a list")
        return []
    fields, seen = [], set()
    for position, item in enumerate(raw):
        path = f"spec.required_context.fields[{position}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            r.doc.error(path, "each required context field needs a name")
            continue
        name = item["name"].strip()
        if name in seen:
            r.doc.error(path, f"duplicate required context field {name!r}")
            continue
        seen.add(name)
        required = item.get("required", True)
        if not isinstance(required, bool):
            r.doc.error(f"{path}.required", "required must be true or false")
            required = True
        fields.append(
            {
                "name": name,
                "type": str(item.get("type") or "string"),
                "required": required,
                "description": str(item.get("description") or ""),
                "validation": _jsonable(item.get("validation")),
            }
        )
    return fields


def _surface(r: _Reader) -> dict:
    policy = r.spec.get("policy") if isinstance(r.spec.get("policy"), dict) else {}
    status = r.choice("status", SurfaceStatus.values)  # validated, but apply always stores review
    del status
    values = {
        "description": r.text("description"),
        "domain": r.text("domain", default="default", max_length=255),
        "category": r.text("category", max_length=255),
        "risk_tier": r.choice("risk_tier", RiskTier.values),
        "process_id": r.ref("process_id", Kind.PROCESS, required=True),
        "business_owner": r.text("business_owner", max_length=255),
        "technical_owner": r.text("technical_owner", max_length=255),
        "required_context": _required_context_fields(r),
        "consequence_types": r.json_list("consequence_types"),
        "minimum_confidence": r.unit("minimum_confidence"),
        "policy_package": r.text("policy_package", max_length=255) or str(policy.get("package") or ""),
        "policy_version": r.text("policy_version", max_length=64) or str(policy.get("version") or ""),
        "failure_mode": r.choice("failure_mode", FailMode.values, default=FailMode.CLOSED),
        "tags": r.string_list("tags"),
        "effective_from": r.timestamp("effective_from") or r.timestamp("lifecycle.effective_from"),
        "effective_until": r.timestamp("effective_until") or r.timestamp("lifecycle.effective_until"),
    }
    _check_window(r, values["effective_from"], values["effective_until"])
    return values


def _check_window(r: _Reader, start, end) -> None:
    if start and end and end <= start:
        r.doc.error("spec.effective_until", "effective_until must be after effective_from")


def _consequence(r: _Reader) -> dict:
    node = r._get("authority.consequence_threshold")
    empty = {
        "consequence_type": "",
        "consequence_amount": None,
        "consequence_currency": "",
        "consequence_risk_rating": "",
    }
    if node is None:
        return empty
    if not isinstance(node, dict):
        r.doc.error("spec.authority.consequence_threshold", "consequence_threshold must be a mapping")
        return empty
    kind = node.get("type")
    if kind == ConsequenceType.MONETARY:
        amount, currency = node.get("amount"), node.get("currency")
        try:
            if isinstance(amount, bool):
                raise InvalidOperation
            amount = Decimal(str(amount))
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            r.doc.error("spec.authority.consequence_threshold.amount", "amount must be a non-negative number")
            amount = None
        if not isinstance(currency, str) or not CURRENCY.match(currency.strip().upper()):
            r.doc.error("spec.authority.consequence_threshold.currency", "currency must be an ISO 4217 code")
            currency = ""
        return {
            **empty,
            "consequence_type": kind,
            "consequence_amount": amount,
            "consequence_currency": currency.strip().upper(),
        }
    if kind == ConsequenceType.RISK_RATING:
        rating = node.get("risk_rating")
        if rating not in RiskRating.values:
            r.doc.error(
                "spec.authority.consequence_threshold.risk_rating",
                "risk_rating must be one of low, medium, high, critical",
            )
            rating = ""
        return {**empty, "consequence_type": kind, "consequence_risk_rating": rating}
    r.doc.error("spec.authority.consequence_threshold.type", "type must be monetary or risk_rating")
    return empty


def _profile(r: _Reader) -> dict:
    lifecycle_status = r.choice("lifecycle.status", ProfileStatus.values)
    if lifecycle_status and lifecycle_status not in (ProfileStatus.REVIEW, ProfileStatus.ACTIVE):
        r.doc.error("spec.lifecycle.status", "a profile's lifecycle.status can only be review or active")
    r.doc.requested_status = lifecycle_status or None
    required_keys = r.string_list("input_requirements.required_context") or r.string_list("required_context_keys")
    values = {
        "description": r.text("description"),
        "surface_key": r.ref("surface_id", Kind.SURFACE, required=True),
        "confidence_threshold": r.unit("authority.decision_confidence_threshold", default=0.0),
        **_consequence(r),
        "policy_reference": r.text("policy.reference", max_length=255),
        "fail_mode": r.choice("policy.fail_mode", FailMode.values, default=FailMode.CLOSED),
        "escalation_mode": r.choice("escalation_mode", EscalationMode.values)
        or r.choice("authority.escalation_mode", EscalationMode.values, default=EscalationMode.AUTO),
        "required_context_keys": required_keys,
        "effective_date": r.timestamp("lifecycle.effective_from") or r.timestamp("effective_date"),
        "effective_until": r.timestamp("lifecycle.effective_until") or r.timestamp("effective_until"),
    }
    _check_window(r, values["effective_date"], values["effective_until"])
    return values


def _agent(r: _Reader) -> dict:
    raw_type = r.text("type", default=AgentType.AI)
    agent_type = AGENT_TYPE_ALIASES.get(raw_type, raw_type)
    if agent_type not in AgentType.values:
        r.doc.error(
            "spec.type", "type must be one of ai, service, operator, llm_agent, copilot, workflow, automation, rpa"
        )
        agent_type = AgentType.AI
    runtime = r.spec.get("runtime") if isinstance(r.spec.get("runtime"), dict) else {}
    model_version = r.text("model_version", max_length=255) or ":".join(
        str(runtime[k]) for k in ("model", "version") if runtime.get(k)
    )
    state = r.choice("operational_state", OperationalState.values) or r.choice(
        "status", OperationalState.values, default=OperationalState.ACTIVE
    )
    return {
        "type": str(agent_type),
        "owner": r.text("owner", max_length=255),
        "model_version": model_version[:255],
        "endpoint": r.text("endpoint", max_length=1000),
        "operational_state": state,
    }


def _grant(r: _Reader) -> dict:
    values = {
        "agent_id": r.ref("agent_id", Kind.AGENT, required=True),
        "profile_key": r.ref("profile_id", Kind.PROFILE, required=True),
        "granted_by": r.text("granted_by", max_length=255),
        "grant_reason": r.text("grant_reason"),
        "status": r.choice("status", GrantStatus.values, default=GrantStatus.ACTIVE),
        "effective_from": r.timestamp("effective_from"),
        "effective_until": r.timestamp("effective_until"),
    }
    _check_window(r, values["effective_from"], values["effective_until"])
    return values


def _policy(r: _Reader) -> dict:
    package = r.text("package", required=True, max_length=255)
    source = r.text("source", required=True, max_length=1_000_000)
    if package and not PACKAGE_NAME.match(package):
        r.doc.error("spec.package", "package must be a dotted Rego package name")
    elif package and source:
        try:
            compile_check(package, source)
        except PolicyError as exc:
            r.doc.error("spec.source", f"policy does not compile: {exc}")
    return {"package": package, "source": source, "version": r.text("version", max_length=64)}


VALIDATORS = {
    Kind.BUSINESS_SERVICE: _business_service,
    Kind.CAPABILITY: _capability,
    Kind.BUSINESS_SERVICE_CAPABILITY: _business_service_capability,
    Kind.PROCESS: _process,
    Kind.POLICY: _policy,
    Kind.SURFACE: _surface,
    Kind.AGENT: _agent,
    Kind.PROFILE: _profile,
    Kind.GRANT: _grant,
}


def _spec_value(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


def validate_document(index: int, raw) -> Document:
    doc = Document(index=index)
    if not isinstance(raw, dict):
        doc.error("", "document must be a mapping with apiVersion, kind, metadata and spec")
        return doc
    kind, metadata, spec = raw.get("kind"), raw.get("metadata"), raw.get("spec")
    doc.kind = kind if isinstance(kind, str) else ""
    metadata = metadata if isinstance(metadata, dict) else {}
    raw_id = metadata.get("id")
    doc.id = raw_id.strip() if isinstance(raw_id, str) else ""
    try:
        ijson.check(raw)
    except ijson.OutOfDomain as exc:
        doc.error(exc.path, exc.message)
        return doc
    if raw.get("apiVersion") not in API_VERSIONS:
        doc.error("apiVersion", f"apiVersion must be one of {', '.join(sorted(API_VERSIONS))}")
    if doc.kind not in VALIDATORS:
        doc.error("kind", f"kind must be one of {', '.join(VALIDATORS)}")
    if not isinstance(raw.get("metadata"), dict):
        doc.error("metadata", "metadata is required")
    if not doc.id:
        doc.error("metadata.id", "metadata.id is required")
    elif not is_resource_id(doc.id):
        doc.error("metadata.id", "metadata.id must be 1-255 lowercase letters, digits, '.', '-' or '_'")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        doc.error("spec", "spec must be a mapping")
        spec = {}
    name = metadata.get("name") or spec.get("name") or ""
    if not isinstance(name, str) or len(name) > 255:
        doc.error("metadata.name", "metadata.name must be a string of at most 255 characters")
        name = ""
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict):
        doc.error("metadata.labels", "metadata.labels must be a mapping")
        labels = {}
    if doc.kind not in VALIDATORS:
        return doc
    reader = _Reader(doc, spec)
    kind_fields = VALIDATORS[doc.kind](reader)
    description = kind_fields.pop("description", None)
    if description is None:
        description = reader.text("description")
    doc.fields = {"name": name.strip(), "description": description, "labels": _jsonable(labels), **kind_fields}
    doc.spec = {key: _spec_value(value) for key, value in doc.fields.items()}
    if doc.kind == Kind.PROFILE and doc.requested_status:
        doc.spec["lifecycle_status"] = doc.requested_status
    return doc
