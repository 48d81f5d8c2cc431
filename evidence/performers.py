"""Who performed an event, by name. The record keeps performers as (type, id) and knows no
people or channels; the apps that own them register how to name theirs (envelopes' AppConfig
names people and agents' channels), so every page that shows a chain shows names, in one form,
with at most one query per performer type."""

from collections.abc import Callable, Iterable

# (organization id or None for every organization, ids) -> {id: name}
Namer = Callable[[object, set[str]], dict[str, str]]
_namers: dict[str, Namer] = {}


def register(performer_type: str, namer: Namer) -> None:
    _namers[performer_type] = namer


class PerformerNames:
    def __init__(self, names: dict[tuple[str, str], str]):
        self.names = names

    @classmethod
    def of(cls, organization_id, pairs: Iterable[tuple[str, object]]) -> "PerformerNames":
        wanted: dict[str, set[str]] = {}
        for kind, ref in pairs:
            if ref and kind in _namers:
                wanted.setdefault(kind, set()).add(str(ref))
        names = {}
        for kind, refs in wanted.items():
            for ref, name in _namers[kind](organization_id, refs).items():
                names[(kind, ref)] = name
        return cls(names)

    def name(self, kind: str, ref) -> str:
        return self.names.get((kind, str(ref)), str(ref))

    def label(self, kind: str, ref) -> str:
        return f"{kind} · {self.name(kind, ref)}"
