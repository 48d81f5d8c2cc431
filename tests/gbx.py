"""What the GBX tests share: a customer (a person with an email and a token), an issuance
token, and the calls of a run, through the real API."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from entitlements.services.issuers import make_issuance_token
from governance.services.people import create_person
from governance.services.tokens import issue_token


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def later(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Customer:
    email: str
    client: APIClient
    token: str

    def post(self, path: str, body=None, **extra):
        return self.client.post(f"/api/entitlement/{path}", body if body is not None else {}, format="json", **extra)

    def run(self, run_id: str, *, complete: bool = True):
        """check → consume → run_start → (run_complete): the last answer."""
        for path, body in (
            ("check", {"run_id": run_id}),
            ("consume", {"run_id": run_id}),
            (
                "run_start",
                {
                    "run_id": run_id,
                    "inputs_sha256": sha(f"in-{run_id}"),
                    "container_image": "ghcr.io/acme/job:1.4",
                    "project_id": "proj-7",
                },
            ),
        ):
            answer = self.post(path, body)
            assert answer.status_code == 200, (path, answer.content)
        if not complete:
            return answer
        answer = self.post(
            "run_complete",
            {"run_id": run_id, "outputs_sha256": sha(f"out-{run_id}"), "run_manifest_sha256": sha(f"m-{run_id}")},
        )
        assert answer.status_code == 200, answer.content
        return answer


@dataclass
class GBX:
    organization: object
    issuer_secret: str
    make_customer: object

    def issue(self, customer: "Customer", runs: int = 3, plan_id: str = "gbx_standard", expires_at: str | None = None):
        return customer.client.post(
            "/api/entitlement/issue",
            {"principal": customer.email, "plan_id": plan_id, "runs_total": runs, "expires_at": expires_at or later()},
            format="json",
            HTTP_X_GBX_ADMIN_TOKEN=self.issuer_secret,
        )


@pytest.fixture
def gbx(organization):
    counter = {"n": 0}

    def make_customer(email: str | None = None) -> Customer:
        counter["n"] += 1
        username = f"customer{counter['n']}"
        person = create_person(organization, username, email=email or f"{username}@example.com")
        _, secret = issue_token(person, "job", [])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return Customer(person.email.lower(), client, secret)

    _, secret = make_issuance_token(organization, "partner")
    return GBX(organization, secret, make_customer)
