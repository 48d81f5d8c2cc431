"""Every shell example in docs/*.md and README.md runs, as written, against a live server.

Each document's examples run in order with bash (``set -euo pipefail``) against a real
uvicorn (``tests.faults.server``) on a fresh database holding what ``make run`` loads: the
demo organization (``bootstrap_demo``) and the demo bundle applied and approved. The test
substitutes only the base URL (``http://127.0.0.1:8080`` → the server's) and provides what
``make run`` and the console show at run time, as the variables the documents name (each
document says where its variables come from): ``$TOKEN`` and ``$ADMIN_PASSWORD`` (read from
``bootstrap_demo``'s own output), ``$INVITE`` (an invite token, as the Agents page makes
them) and ``$TEAM_ID`` (the demo's Payments team, as the console shows it). The shell
stands where ``make run`` ran: in the repository (a scratch copy of its top level, with
``var/secret_key``), with the server's ``DATABASE_URL``, so ``manage.py`` commands reach the
server's database. An example may use the variables set by earlier examples of the same
document. Every HTTP request an example makes must answer 2xx (a ``curl`` on the path records
each status), unless the fence says otherwise (```` ```sh status=408 ````).

Fence info strings: ``sh``/``bash``/``shell`` examples run unless marked ``no-run`` (what
cannot run here: ``make run`` itself, production and deployment commands) or ``journey`` (it
needs the browser steps of README's "First hour" before it: ``tests/test_readme_journey.py``
runs it). Every fence names its language, so no shell example goes unrun without a visible
marker.
"""

import io
import os
import re
import shutil
import subprocess
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.faults import database_url_named, server

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
DOCUMENTED_BASE = "http://127.0.0.1:8080"
SHELL = {"sh", "bash", "shell"}
NOT_SHELL = {"json", "python", "js", "sql", "text", "yaml"}
# journey: needs the browser steps README's "First hour" tells before it; tests/test_readme_journey.py runs it.
ATTRIBUTE = re.compile(r"^(no-run|journey|status=[1-5][0-9][0-9])$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
# Where each provided variable comes from; a document that uses one must say so.
PROVIDED = {
    "TOKEN": "demo API token",
    "ADMIN_PASSWORD": "admin password",
    "INVITE": "New invite URL",
    "TEAM_ID": "Payments team",
}
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
EXAMPLE_TIMEOUT = 90

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Example:
    document: Path
    line: int
    language: str
    attributes: set[str] = field(default_factory=set)
    code: str = ""

    @property
    def runs(self) -> bool:
        return self.language in SHELL and not self.attributes & {"no-run", "journey"}

    @property
    def expected_status(self) -> str | None:
        return next((a.removeprefix("status=") for a in self.attributes if a.startswith("status=")), None)

    def __str__(self):
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def examples_of(document: Path) -> list[Example]:
    text = document.read_text()
    found = []
    for match in FENCE.finditer(text):
        language, *attributes = match["info"].split() or [""]
        body = textwrap.dedent(match["indent"] + match["body"]) if match["indent"] else match["body"]
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(document, line, language, set(attributes), body))
    return found


def runnable_documents() -> list[Path]:
    return [document for document in DOCUMENTS if any(e.runs for e in examples_of(document))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_fence_names_its_language_and_marks_what_does_not_run(document):
    for example in examples_of(document):
        assert example.language in SHELL | NOT_SHELL, f"{example}: fence language {example.language!r}"
        for attribute in example.attributes:
            assert ATTRIBUTE.match(attribute), f"{example}: unknown fence attribute {attribute!r}"
        if example.runs:
            assert "mdt_..." not in example.code and "mdt_…" not in example.code, (
                f"{example}: a placeholder token; use $TOKEN"
            )


def test_documents_have_runnable_examples():
    """The extractor finds the examples (a broken pattern would pass every document)."""
    names = {document.name for document in runnable_documents()}
    assert {"README.md", "channels.md", "evaluation.md", "envelopes.md", "introspection.md"} <= names


def test_examples_use_the_documented_base_url_only():
    for document in DOCUMENTS:
        for example in examples_of(document):
            if example.runs:
                for url in re.findall(r"https?://(?:127\.0\.0\.1|localhost)(?::\d+)?", example.code):
                    assert url == DOCUMENTED_BASE, f"{example}: {url}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_documents_link_only_to_files_in_the_repository(document):
    for target in LINK.findall(document.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = (document.parent / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{document.name} links to {target}"


# --- the live run ---------------------------------------------------------------------------


@dataclass
class Demo:
    token: str
    password: str
    printed_example: str


def load_demo(base_url: str) -> Demo:
    """What ``make run`` does before serving: the demo organization, then the demo bundle."""
    out = io.StringIO()
    call_command("bootstrap_demo", base_url=base_url, stdout=out)
    printed = out.getvalue()
    call_command(
        "apply_bundle",
        str(ROOT / "controlplane" / "demo" / "bundle.yaml"),
        organization="demo",
        actor="system:demo",
        approve_as="admin",
        stdout=io.StringIO(),
    )
    token = re.search(r"demo API token \(shown once\): (\S+)", printed)
    password = re.search(r"user 'admin'\s+password '([^']+)'", printed)
    example = re.search(r"^\s*(curl .*)$", printed, re.M)
    assert token and password and example, printed
    return Demo(token[1], password[1], example[1])


def console_values() -> dict[str, str]:
    """What a reader copies from the console: an invite token (the Agents page's **New invite
    URL**, made for the signed-in admin) and the demo's Payments team id (its Teams list)."""
    from envelopes.requests.channels import create_invite
    from governance.models import Person, Team

    return {
        "INVITE": create_invite(Person.objects.get(username="admin"))[1],
        "TEAM_ID": str(Team.objects.get(organization__slug="demo", name="Payments").pk),
    }


CURL_RECORDER = """#!/bin/bash
# curl, recording the final HTTP status of each call (for the doc-example test).
headers=$(mktemp)
{curl} -D "$headers" "$@"
code=$?
awk 'toupper($1) ~ /^HTTP\\// {{status = $2}} END {{if (status) print status}}' "$headers" >> "$CURL_STATUSES"
rm -f "$headers"
exit $code
"""

RUNNER = """__baseline=$(compgen -v)
set -euo pipefail
source "$EXAMPLE_STATE"
{code}
__names=$(compgen -v)
for __name in $__names; do
  case "$__name" in __*|BASH*|PIPESTATUS|FUNCNAME|GROUPS|LINENO|RANDOM|SECONDS|SRANDOM|EPOCH*|_) continue ;; esac
  grep -qxF "$__name" <<<"$__baseline" || declare -p "$__name"
done > "$EXAMPLE_STATE.next"
mv "$EXAMPLE_STATE.next" "$EXAMPLE_STATE"
"""


class Shell:
    """Runs a document's examples in order in a scratch directory that sees the repository's
    files (``@controlplane/demo/bundle.yaml``), carrying shell variables from one to the next."""

    def __init__(self, workdir: Path, base_url: str, variables: dict[str, str]):
        self.workdir = workdir
        self.base_url = base_url
        for entry in ROOT.iterdir():
            if entry.name != "var" and (not entry.name.startswith(".") or entry.name == ".venv"):
                (workdir / entry.name).symlink_to(entry)
        (workdir / "var").mkdir()
        (workdir / "var" / "secret_key").write_text(os.environ["SECRET_KEY"] + "\n")
        tools = workdir / ".tools"
        tools.mkdir()
        recorder = tools / "curl"
        recorder.write_text(CURL_RECORDER.format(curl=shutil.which("curl")))
        recorder.chmod(0o755)
        self.state = workdir / ".state"
        self.state.write_text("")
        self.statuses = workdir / ".statuses"
        self.env = {
            **{k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TZ", "USER")},
            "PATH": f"{tools}:{os.environ['PATH']}",
            "EXAMPLE_STATE": str(self.state),
            "CURL_STATUSES": str(self.statuses),
            **variables,
        }

    def run(self, example: Example) -> list[str]:
        code = example.code.replace(DOCUMENTED_BASE, self.base_url)
        self.statuses.write_text("")
        result = subprocess.run(
            ["bash", "-c", RUNNER.format(code=code)],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
        )
        statuses = self.statuses.read_text().split()
        self.last_stdout = result.stdout
        shown = f"{example}:\n{example.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        assert result.returncode == 0, f"exit {result.returncode} in {shown}"
        expected = example.expected_status
        if expected:
            assert statuses and set(statuses) == {expected}, f"statuses {statuses}, expected {expected}, in {shown}"
        else:
            assert all(s.startswith("2") for s in statuses), f"statuses {statuses} in {shown}"
        if "curl" in example.code:
            assert statuses, f"no HTTP request answered in {shown}"
        return statuses


@dataclass
class Live:
    url: str
    database_url: str
    demo: Demo


@pytest.fixture
def live(tmp_path):
    """A live server on this test's fresh database (as ``make run`` serves it: no Redis, its
    own var directory, webhooks to unresolved hosts allowed), the demo loaded as ``make run``
    loads it."""
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    database_url = database_url_named(f"mandate-docs-{uuid.uuid4().hex[:8]}")
    environment = {"MANDATE_VAR_DIR": str(var_dir), "REDIS_URL": "", "MANDATE_WEBHOOK_ALLOW_PRIVATE": "true"}
    with server(database_url, **environment) as app:
        yield Live(app.url, database_url, load_demo(app.url))


def shell_for(live: Live, tmp_path: Path) -> Shell:
    for tool in ("bash", "curl", "jq"):  # what the examples use (README says so)
        assert shutil.which(tool), f"the doc examples need {tool}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    variables = {"TOKEN": live.demo.token, "ADMIN_PASSWORD": live.demo.password, **console_values()}
    return Shell(workdir, live.url, {**variables, "DATABASE_URL": live.database_url})


@pytest.mark.postgres
@pytest.mark.parametrize("document", runnable_documents(), ids=lambda d: str(d.relative_to(ROOT)))
def test_document_examples_run_as_written(document, live, tmp_path):
    examples = [example for example in examples_of(document) if example.runs]
    text = " ".join(document.read_text().split())
    for name, origin in PROVIDED.items():
        if any(re.search(rf"\${{?{name}\b", example.code) for example in examples):
            assert origin in text, f"{document.name} uses ${name} without saying where it comes from ({origin!r})"
    shell = shell_for(live, tmp_path)
    for example in examples:
        shell.run(example)


WITHOUT_TOKEN = re.compile(r"""\s-H\s+(["'])Authorization: Bearer [^"']+\1""")


@pytest.mark.postgres
def test_the_token_examples_after_make_run_call_an_endpoint_that_needs_the_token(live, tmp_path):
    """The curl ``bootstrap_demo`` prints under the token, and README's first curl after
    ``make run``: both answer 2xx with the token and 401 without it."""
    readme = next(e for e in examples_of(ROOT / "README.md") if e.runs and "$TOKEN" in e.code)
    shell = shell_for(live, tmp_path)
    for code in (live.demo.printed_example, readme.code):
        assert WITHOUT_TOKEN.search(code), code
        statuses = shell.run(Example(ROOT / "README.md", 0, "sh", set(), code))
        assert statuses and all(s.startswith("2") for s in statuses), code
        anonymous = WITHOUT_TOKEN.sub("", code)
        assert shell.run(Example(ROOT / "README.md", 0, "sh", {"status=401"}, anonymous.replace("-fsS", "-sS")))
