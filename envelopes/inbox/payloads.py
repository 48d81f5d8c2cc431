"""An agent's payload, readably: the options of a choice, the prompt of an input request, the
amount of a spend, the poll of a poll request; everything else as labelled fields."""

from dataclasses import dataclass

from envelopes.choices import RequestType
from envelopes.inbox.documents import tree
from envelopes.inbox.labels import spend_text
from envelopes.models import ApprovalRequest


@dataclass
class Option:
    value: str
    label: str
    detail: str = ""
    chosen: bool = False


def payload_view(approval: ApprovalRequest) -> dict:
    """The payload, readably: options of a choice, the prompt of an input request, the amount of
    a spend, the poll of a poll request; everything else as labelled fields."""
    payload = approval.payload
    view = {"options": [], "prompt": "", "amount": "", "poll": None}
    if not isinstance(payload, dict):
        view["rest"] = tree(payload)
        return view
    rest = dict(payload)
    if approval.type == RequestType.CHOICE:
        for option in rest.pop("options", None) or []:
            if isinstance(option, dict):
                value = option.get("id", option.get("label"))
                detail = option.get("description") or option.get("detail") or ""
                label = option.get("label", value)
            else:
                value, label, detail = option, option, ""
            view["options"].append(
                Option(
                    str(value), str(label), str(detail), chosen=approval.choice is not None and approval.choice == value
                )
            )
    if approval.type == RequestType.INPUT_REQUEST:
        for key in ("prompt", "question", "input_prompt", "instructions"):
            if isinstance(rest.get(key), str):
                view["prompt"] = rest.pop(key)
                break
        view["placeholder"] = rest.pop("placeholder", "") if isinstance(rest.get("placeholder"), str) else ""
    if approval.type == RequestType.SPEND_APPROVAL:
        view["amount"] = spend_text(approval)
        rest.pop("amount", None)
        rest.pop("currency", None)
    if approval.type == RequestType.POLL_REQUEST and isinstance(rest.get("poll_url"), str):
        url = rest.pop("poll_url")
        hint = rest.pop("poll_render_hint", None)
        hint = hint if isinstance(hint, dict) else {}

        def size(key, low, high, default):
            value = hint.get(key)
            return max(low, min(high, value)) if isinstance(value, int) and not isinstance(value, bool) else default

        view["poll"] = {
            "url": url,
            "https": url.startswith("https://"),
            "embed": hint.get("embed") == "iframe" and url.startswith("https://"),
            "width": size("width", 240, 1200, 600),
            "height": size("height", 160, 900, 400),
            "provider": str(rest.pop("poll_provider", "") or ""),
            "poll_id": str(rest.pop("poll_id", "") or ""),
            "instructions": str(rest.pop("poll_instructions", "") or ""),
        }
    view["rest"] = tree(rest) if rest else None
    return view
