"""Plan and apply YAML bundles (MIDAS ``/v1/controlplane/plan`` and ``/apply``).

Planning reads persisted state with a fixed number of queries per bundle (one per kind),
never per document; apply writes each kind with bulk inserts in dependency order, in
one transaction, under a per-organization lock so concurrent applies cannot interleave.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction

from controlplane.choices import TERMINAL_STATUSES, VERSIONED_KINDS, Kind, ProfileStatus, SurfaceStatus
from controlplane.models import (
    Agent,
    BusinessService,
    BusinessServiceCapability,
    Capability,
    Grant,
    Policy,
    Process,
    Profile,
    Surface,
)
from controlplane.services.documents import Document, parse_bundle
from controlplane.services.revision import bump_revision
from evidence.models import ControlPlaneAuditRecord
from evidence.services.audit_trails import controlplane_change
from governance.models import Organization

MODELS = {
    Kind.BUSINESS_SERVICE: BusinessService,
    Kind.CAPABILITY: Capability,
    Kind.BUSINESS_SERVICE_CAPABILITY: BusinessServiceCapability,
    Kind.PROCESS: Process,
    Kind.POLICY: Policy,
    Kind.SURFACE: Surface,
    Kind.AGENT: Agent,
    Kind.PROFILE: Profile,
    Kind.GRANT: Grant,
}
WARNING_CODES = {
    Kind.SURFACE: "REF_SURFACE_TERMINAL",
    Kind.PROFILE: "REF_PROFILE_TERMINAL",
    Kind.PROCESS: "REF_PROCESS_TERMINAL",
    Kind.CAPABILITY: "REF_CAPABILITY_TERMINAL",
}


@dataclass
class PlanEntry:
    doc: Document
    action: str  # create | conflict | invalid | unchanged
    decision_source: str  # persisted_state | bundle_dependency | validation
    message: str = ""
    create_kind: str | None = None  # new | new_version
    version: int | None = None
    diff: list[dict] | None = None
    warnings: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        entry = {
            "kind": self.doc.kind,
            "id": self.doc.id,
            "action": self.action,
            "document_index": self.doc.index,
            "decision_source": self.decision_source,
        }
        if self.message:
            entry["message"] = self.message
        if self.create_kind:
            entry["create_kind"] = self.create_kind
        if self.version is not None:
            entry["version"] = self.version
        if self.diff is not None:
            entry["diff"] = {"fields": self.diff}
        if self.warnings:
            entry["warnings"] = self.warnings
        return entry


@dataclass
class Plan:
    entries: list[PlanEntry]
    persisted: dict

    @property
    def invalid_count(self) -> int:
        return sum(e.action == "invalid" for e in self.entries)

    @property
    def conflict_count(self) -> int:
        return sum(e.action == "conflict" for e in self.entries)

    @property
    def create_count(self) -> int:
        return sum(e.action == "create" for e in self.entries)

    @property
    def would_apply(self) -> bool:
        return self.invalid_count == 0 and self.create_count > 0

    @property
    def validation_errors(self) -> list[dict]:
        return [error for e in self.entries if e.action == "invalid" for error in e.doc.errors]

    def as_dict(self) -> dict:
        return {
            "entries": [e.as_dict() for e in self.entries],
            "would_apply": self.would_apply,
            "invalid_count": self.invalid_count,
            "conflict_count": self.conflict_count,
            "create_count": self.create_count,
            "validation_errors": self.validation_errors,
        }


# --- persisted state --------------------------------------------------------------------


def _status_of(obj) -> str:
    return getattr(obj, "status", "")


def load_persisted(organization: Organization, docs: list[Document]) -> dict[str, dict[str, object]]:
    """Existing resources for every id the bundle declares or references: one query per kind."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        if doc.kind in MODELS and doc.id:
            wanted[doc.kind].add(doc.id)
        for ref in doc.references:
            wanted[ref.kind].add(ref.id)
    persisted: dict[str, dict[str, object]] = {kind: {} for kind in MODELS}
    for kind, keys in wanted.items():
        if not keys:
            continue
        model = MODELS[kind]
        queryset = model.objects.filter(organization=organization, key__in=keys)
        if kind in VERSIONED_KINDS:
            for obj in queryset.order_by("key", "-version"):
                persisted[kind].setdefault(obj.key, obj)  # the latest version
        elif kind == Kind.BUSINESS_SERVICE_CAPABILITY:
            for obj in queryset.select_related("business_service", "capability"):
                persisted[kind][obj.key] = obj
        else:
            for obj in queryset:
                persisted[kind][obj.key] = obj
    return persisted


# --- planning ---------------------------------------------------------------------------


def _diff(before: dict, after: dict) -> list[dict]:
    keys = sorted(set(before) | set(after))
    return [
        {"field": f"spec.{key}", "before": before.get(key), "after": after.get(key)}
        for key in keys
        if before.get(key) != after.get(key)
    ]


def _parents(docs: list[Document], kind: str, parent_field: str) -> dict[str, str]:
    return {d.id: d.fields.get(parent_field) for d in docs if d.kind == kind and d.fields.get(parent_field)}


def _cycle_members(parents: dict[str, str]) -> set[str]:
    cyclic = set()
    for start in parents:
        seen, node = set(), start
        while node in parents and node not in seen:
            seen.add(node)
            node = parents[node]
        if node == start:
            cyclic.add(start)
    return cyclic


def plan_documents(organization: Organization, docs: list[Document]) -> Plan:
    persisted = load_persisted(organization, docs)
    in_bundle: dict[tuple[str, str], Document] = {}
    duplicates = set()
    for doc in docs:
        if doc.kind in MODELS and doc.id:
            if (doc.kind, doc.id) in in_bundle:
                duplicates.add(doc.index)
            else:
                in_bundle[(doc.kind, doc.id)] = doc

    cyclic = {(Kind.CAPABILITY, key) for key in _cycle_members(_parents(docs, Kind.CAPABILITY, "parent_capability_id"))}
    cyclic |= {(Kind.PROCESS, key) for key in _cycle_members(_parents(docs, Kind.PROCESS, "parent_process_id"))}
    link_pairs = {
        (link.business_service.key, link.capability.key): key
        for key, link in persisted[Kind.BUSINESS_SERVICE_CAPABILITY].items()
    }

    entries = []
    for doc in docs:
        if doc.index in duplicates:
            doc.error("metadata.id", f"duplicate {doc.kind} id {doc.id!r} in bundle")
        if (doc.kind, doc.id) in cyclic:
            doc.error("spec", f"{doc.kind} parent chain of {doc.id!r} forms a cycle")
        source, warnings = "persisted_state", []
        for ref in doc.references:
            found = persisted.get(ref.kind, {}).get(ref.id)
            if found is not None:
                if _status_of(found) in TERMINAL_STATUSES and ref.kind in WARNING_CODES:
                    label = ref.kind.lower()
                    warnings.append(
                        {
                            "code": WARNING_CODES[ref.kind],
                            "severity": "warning",
                            "message": f'referenced {label} "{ref.id}" is {_status_of(found)}; referrer will be '
                            f"linked to a terminal-state {label}",
                            "field": ref.field,
                            "related_kind": ref.kind,
                            "related_id": ref.id,
                        }
                    )
            elif (ref.kind, ref.id) in in_bundle:
                source = "bundle_dependency"
            else:
                doc.error(ref.field, f"referenced {ref.kind} {ref.id!r} does not exist")
        if doc.kind == Kind.PROCESS and doc.fields.get("parent_process_id") == doc.id:
            doc.error("spec.parent_process_id", "a process cannot be its own parent")
        if doc.kind == Kind.CAPABILITY and doc.fields.get("parent_capability_id") == doc.id:
            doc.error("spec.parent_capability_id", "a capability cannot be its own parent")
        if doc.errors:
            entries.append(PlanEntry(doc, "invalid", "validation", doc.errors[0]["message"]))
            continue

        existing = persisted[doc.kind].get(doc.id)
        if doc.kind in VERSIONED_KINDS:
            if existing is None:
                entries.append(PlanEntry(doc, "create", source, create_kind="new", version=1, warnings=warnings))
            elif existing.spec == doc.spec:
                entries.append(
                    PlanEntry(
                        doc,
                        "unchanged",
                        "persisted_state",
                        f"identical to version {existing.version}",
                        warnings=warnings,
                    )
                )
            elif existing.status == SurfaceStatus.REVIEW:
                entries.append(
                    PlanEntry(
                        doc,
                        "conflict",
                        "persisted_state",
                        f"version {existing.version} is already in review; approve or supersede it first",
                        warnings=warnings,
                    )
                )
            else:
                entries.append(
                    PlanEntry(
                        doc,
                        "create",
                        "persisted_state",
                        create_kind="new_version",
                        version=existing.version + 1,
                        diff=_diff(existing.spec, doc.spec),
                        warnings=warnings,
                    )
                )
            continue

        if existing is not None:
            if existing.spec == doc.spec:
                entries.append(
                    PlanEntry(
                        doc, "unchanged", "persisted_state", "identical to the existing resource", warnings=warnings
                    )
                )
            else:
                entries.append(
                    PlanEntry(doc, "conflict", "persisted_state", "resource already exists", warnings=warnings)
                )
            continue
        if doc.kind == Kind.BUSINESS_SERVICE_CAPABILITY:
            pair = (doc.fields["business_service_id"], doc.fields["capability_id"])
            if pair in link_pairs:
                entries.append(
                    PlanEntry(
                        doc,
                        "conflict",
                        "persisted_state" if link_pairs[pair] != "" else source,
                        f"this business service and capability are already linked as {link_pairs[pair]!r}",
                    )
                )
                continue
            link_pairs[pair] = doc.id
        entries.append(PlanEntry(doc, "create", source, create_kind="new", warnings=warnings))
    return Plan(entries, persisted)


def plan_bundle(organization: Organization, body: bytes | str) -> Plan:
    """Dry run: what apply would do. Never writes. BundleSyntaxError for malformed YAML."""
    return plan_documents(organization, parse_bundle(body))


# --- applying ---------------------------------------------------------------------------


@dataclass
class ApplyResult:
    plan: Plan
    written: bool

    @property
    def results(self) -> list[dict]:
        if not self.written:
            return [
                {"kind": e.doc.kind, "id": e.doc.id, "status": "error"}
                for e in self.plan.entries
                if e.action == "invalid"
            ]
        status = {"create": "created", "conflict": "conflict", "unchanged": "unchanged"}
        results = []
        for e in self.plan.entries:
            item = {"kind": e.doc.kind, "id": e.doc.id, "status": status[e.action]}
            if e.action == "create" and e.version is not None:
                item["version"] = e.version
            results.append(item)
        return results

    def counts(self) -> dict:
        counts = defaultdict(int)
        for item in self.results:
            counts[f"{item['status']}_count"] += 1
        return dict(counts)

    def as_dict(self) -> dict:
        return {"results": self.results, "validation_errors": self.plan.validation_errors}


def _pk_map(persisted: dict, kind: str) -> dict[str, int]:
    return {key: obj.pk for key, obj in persisted[kind].items()}


def apply_bundle(organization: Organization, body: bytes | str, actor: str) -> ApplyResult:
    """Plan, then write every ``create`` entry atomically; nothing at all if any entry is invalid."""
    docs = parse_bundle(body)
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        plan = plan_documents(organization, docs)
        if plan.invalid_count:
            return ApplyResult(plan, written=False)
        _write(organization, plan, actor)
    return ApplyResult(plan, written=True)


def _write(organization: Organization, plan: Plan, actor: str) -> None:
    creates: dict[str, list[PlanEntry]] = defaultdict(list)
    for entry in plan.entries:
        if entry.action == "create":
            creates[entry.doc.kind].append(entry)
    persisted = plan.persisted
    audit: list[ControlPlaneAuditRecord] = []

    def create(kind: str, build) -> dict[str, int]:
        """Bulk-insert ``kind``; return key → pk for persisted and new rows of that kind."""
        objects = [build(entry) for entry in creates[kind]]
        objects = MODELS[kind].objects.bulk_create(objects, batch_size=1000)
        for entry, obj in zip(creates[kind], objects, strict=True):
            version = getattr(obj, "version", None)
            audit.append(
                controlplane_change(
                    organization_id=organization.pk,
                    kind=kind,
                    resource_id=obj.key,
                    version=version,
                    action="create_version" if entry.create_kind == "new_version" else "create",
                    actor=actor,
                    summary=f"applied {kind} {obj.key}" + (f" v{version}" if version else ""),
                    details={"document_index": entry.doc.index},
                )
            )
        return {**_pk_map(persisted, kind), **{obj.key: obj.pk for obj in objects}}

    def base(entry: PlanEntry, *exclude: str) -> dict:
        values = {k: v for k, v in entry.doc.fields.items() if k not in exclude}
        return {"organization": organization, "key": entry.doc.id, "spec": entry.doc.spec, **values}

    services = create(Kind.BUSINESS_SERVICE, lambda e: BusinessService(**base(e)))
    capabilities = create(Kind.CAPABILITY, lambda e: Capability(**base(e, "parent_capability_id")))
    _link_parents(Capability, creates[Kind.CAPABILITY], capabilities, "parent_capability_id")
    create(
        Kind.BUSINESS_SERVICE_CAPABILITY,
        lambda e: BusinessServiceCapability(
            **base(e, "business_service_id", "capability_id"),
            business_service_id=services[e.doc.fields["business_service_id"]],
            capability_id=capabilities[e.doc.fields["capability_id"]],
        ),
    )
    processes = create(
        Kind.PROCESS,
        lambda e: Process(
            **base(e, "business_service_id", "parent_process_id"),
            business_service_id=services[e.doc.fields["business_service_id"]],
        ),
    )
    _link_parents(Process, creates[Kind.PROCESS], processes, "parent_process_id")
    create(Kind.POLICY, lambda e: Policy(**base(e)))
    create(
        Kind.SURFACE,
        lambda e: Surface(
            **base(e, "process_id"),
            process_id=processes[e.doc.fields["process_id"]],
            version=e.version,
            status=SurfaceStatus.REVIEW,
            submitted_by=actor,
        ),
    )
    agents = create(Kind.AGENT, lambda e: Agent(**base(e)))

    create(
        Kind.PROFILE,
        # Every new version waits in review whatever lifecycle.status says, as in MIDAS: a
        # profile's thresholds are authority, and only an approval by someone else activates them.
        lambda e: Profile(**base(e), version=e.version, status=ProfileStatus.REVIEW, submitted_by=actor),
    )
    create(Kind.GRANT, lambda e: Grant(**base(e, "agent_id"), agent_id=agents[e.doc.fields["agent_id"]]))
    ControlPlaneAuditRecord.objects.bulk_create(audit, batch_size=1000)
    if audit:
        bump_revision(organization)


def _link_parents(model, entries: list[PlanEntry], pks: dict[str, int], parent_field: str) -> None:
    children = [(entry.doc.id, entry.doc.fields.get(parent_field)) for entry in entries]
    updates = [model(pk=pks[child], parent_id=pks[parent]) for child, parent in children if parent]
    if updates:
        model.objects.bulk_update(updates, ["parent"], batch_size=1000)
