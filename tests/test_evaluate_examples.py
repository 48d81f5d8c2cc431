"""``POST /v1/evaluate``'s documented examples are real: the OpenAPI schema served at
/api/schema/ carries an accept and an escalate pair, the demo bundle answers each request
with its response, and docs/evaluation.md shows the very same pairs."""

import json
import re
import uuid
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from governance.choices import Role

pytestmark = pytest.mark.django_db

EVALUATION_DOC = Path(__file__).resolve().parent.parent / "docs" / "evaluation.md"


def served_examples(client) -> dict[str, tuple[dict, dict]]:
    """``{name: (request, response)}`` from the schema the server serves."""
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    operation = response.json()["paths"]["/v1/evaluate"]["post"]
    requests = operation["requestBody"]["content"]["application/json"]["examples"]
    answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(requests) == set(answers)
    return {name: (requests[name]["value"], answers[name]["value"]) for name in requests}


def test_the_schema_carries_an_accept_and_an_escalate_example(client):
    examples = served_examples(client)
    assert set(examples) == {"Accept", "Escalate"}
    assert examples["Accept"][1]["outcome"] == "accept"
    assert examples["Escalate"][1]["outcome"] == "escalate"
    for request, _ in examples.values():
        assert {"surface_id", "agent_id", "confidence"} <= set(request)


def test_the_demo_answers_each_example_request_with_its_example_response(client, demo, make_token):
    operator = APIClient()
    operator.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(Role.PLATFORM_OPERATOR)}")
    for name, (request, expected) in served_examples(client).items():
        response = operator.post("/v1/evaluate", request, format="json")
        assert response.status_code == 200, (name, response.content)
        answer = response.json()
        uuid.UUID(answer["envelope_id"])
        uuid.UUID(expected["envelope_id"])
        assert {**answer, "envelope_id": None} == {**expected, "envelope_id": None}, name


def documented_pairs() -> list[tuple[dict, dict]]:
    """Each ``curl ... /v1/evaluate ... -d '<json>'`` of docs/evaluation.md with the json block after it."""
    text = EVALUATION_DOC.read_text()
    pairs = []
    pattern = r"```sh\n(curl [^`]*?/v1/evaluate.*?-d '(\{.*?\})'\n)```\s*```json\n(.*?)```"
    for match in re.finditer(pattern, text, re.S):
        pairs.append((json.loads(match[2]), json.loads(match[3])))
    return pairs


def test_docs_show_the_same_pairs(client):
    examples = sorted(served_examples(client).values(), key=lambda pair: pair[1]["outcome"])
    documented = sorted(documented_pairs(), key=lambda pair: pair[1]["outcome"])
    assert documented == examples
