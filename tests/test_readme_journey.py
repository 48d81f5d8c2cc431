"""The README's "First hour", followed as a newcomer would: ``make run`` on a fresh database,
then a real browser signs in (and is made to choose a new password), reviews an escalated
evaluation, invites an agent whose request only a second person may approve, and that second
person approves it; the agent reads the decision.

Nothing here is a second copy of the README: the shell steps are the README's own fenced
examples of that section, run in order with bash (only the base URL is substituted, and the
values ``make run`` and the Agents page print are given as the variables the README names);
the browser steps click the names the README tells the reader to click, and the test fails
if the README stops saying them. Screenshots for docs/ are taken on the way
(``MANDATE_SCREENSHOTS=docs/screenshots``)."""

import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from tests.browser import chromium_tab
from tests.faults import free_port
from tests.test_doc_examples import Example, Shell

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTED_BASE = "http://127.0.0.1:8080"
SCREENSHOTS = os.environ.get("MANDATE_SCREENSHOTS", "")
NEW_PASSWORDS = {"admin": "Admin-chose-this-2026!", "alice": "Alice-chose-this-2026!"}

pytestmark = pytest.mark.browser

# What the README tells the reader to see and click, in its own words: the test clicks and
# looks for exactly these, so the README cannot drift from the pages.
SAID = [
    "sign in as `admin`",
    "**Inbox**",
    "**Consequence exceeds the limit**",
    "click **Approve**",
    "**Chain intact**",
    "**Agents** (http://127.0.0.1:8080/agents)",
    "**New invite URL**",
    "**Transfer example.com to Cloudflare**",
    "**You own this agent: separation of duties**",
    "Click **Log out**",
    "sign in as `alice`",
]


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def shell_steps(text: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^```(sh|bash)(?: journey)?\n(.*?)^```$", text, re.M | re.S)]


@contextmanager
def fresh_database():
    """A database of its own for ``make run`` (the embedded SQLite default when the suite runs
    on SQLite; a new PostgreSQL database, dropped afterwards, when it runs on PostgreSQL)."""
    if connection.vendor != "postgresql":
        yield {}
        return
    import psycopg

    params = connection.settings_dict
    name = f"mandate_journey_{uuid.uuid4().hex[:8]}"
    admin = (
        f"postgres://{params['USER']}{':' + params['PASSWORD'] if params['PASSWORD'] else ''}"
        f"@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"
    )
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DATABASE_URL": f"{admin}/{name}", "REDIS_URL": os.environ.get("REDIS_URL", "")}
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def make_run(tmp_path):
    """``make run PORT=…`` exactly as the README says, in the foreground of its own process
    group; yields the base URL and what it printed."""
    port = free_port()
    log = tmp_path / "make-run.log"
    with fresh_database() as database:
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL")}
        environment.pop("DJANGO_SETTINGS_MODULE", None)
        environment.update({k: v for k, v in database.items() if v})
        environment["MANDATE_VAR_DIR"] = str(tmp_path / "var")
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["make", "run", f"PORT={port}"],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/readyz", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("make run did not serve:\n" + log.read_text()[-4000:]) from None
                    time.sleep(0.5)
            yield base, log.read_text()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def shoot(tab, name: str) -> None:
    """docs/screenshots/<name>-1366.png and -390.png, when MANDATE_SCREENSHOTS says where."""
    if not SCREENSHOTS:
        return
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    for width, height in ((1366, 900), (390, 844)):
        tab.set_viewport_size({"width": width, "height": height})
        tab.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    tab.set_viewport_size({"width": 1366, "height": 900})


def sign_in_first_time(tab, username: str, printed_password: str) -> None:
    """Sign in with the printed password; the console insists on a new one first."""
    tab.fill("input[name=login]", username)
    tab.fill("input[name=password]", printed_password)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/accounts/password/change/**")
    assert "temporary password" in tab.locator("body").inner_text()
    tab.fill("input[name=oldpassword]", printed_password)
    tab.fill("input[name=password1]", NEW_PASSWORDS[username])
    tab.fill("input[name=password2]", NEW_PASSWORDS[username])
    tab.click("button[type=submit]")
    tab.wait_for_url("**/admin/**")


def open_card(tab, title: str):
    card = tab.locator("article.inbox-card", has_text=title)
    card.wait_for()  # arrives live (server-sent events), no reload
    return card


def test_a_newcomer_follows_the_readme_from_make_run_to_a_decided_request(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    text = section("The first hour")
    for words in SAID:
        assert words in " ".join(text.split()), f"README's first hour no longer says {words!r}"
    steps = [Example(README, 0, "sh", set(), code) for code in shell_steps(text)]
    assert len(steps) == 4, "README's first hour: verify, evaluate, register and ask, wait"
    (tmp_path / "work").mkdir()

    with make_run(tmp_path) as (base, printed):
        passwords = dict(re.findall(r"user '(\w+)'\s+password '([^']+)'", printed))
        assert set(passwords) == {"admin", "alice", "morgan"}, printed
        token = re.search(r"demo API token \(shown once\): (mdt_\S+)", printed).group(1)
        assert f"{base}/v1/audit/verify" in printed  # the printed links follow PORT
        shell = Shell(tmp_path / "work", base, {"TOKEN": token})

        with chromium_tab(base) as tab:
            tab.set_viewport_size({"width": 1366, "height": 900})
            # 1. Sign in: the printed password is temporary.
            tab.goto("/")
            tab.wait_for_url("**/accounts/login/**")
            shoot(tab, "sign-in")
            sign_in_first_time(tab, "admin", passwords["admin"])
            assert tab.locator("h1", has_text="Inbox").count() == 1

            # 2. The ledger, with the token.
            shell.run(steps[0])
            assert '"intact":true' in shell.last_stdout.replace(" ", "")

            # 3. Within authority, then beyond it: the escalation arrives; admin approves it.
            shell.run(steps[1])
            outcomes = re.findall(r'"outcome":\s*"(\w+)"', shell.last_stdout)
            assert outcomes == ["accept", "escalate"], shell.last_stdout
            card = open_card(tab, "Consequence exceeds the limit")
            shoot(tab, "inbox")
            card.locator("a").first.click()
            tab.fill("textarea[name=notes]", "Known supplier; approved for this quarter.")
            tab.get_by_role("button", name="Approve").click()
            tab.locator("#review-outcome", has_text="Approved").wait_for()
            assert "Chain intact" in tab.locator("body").inner_text()

            # 4. A channel for an agent, from the Agents page; the agent registers and asks.
            tab.goto("/agents")
            tab.get_by_role("button", name="New invite URL").click()
            invite = tab.locator("#invite-token").inner_text().strip()
            assert f"{base}/api/register-channel" in tab.locator("#register-command").inner_text()
            shell.env["INVITE"] = invite
            shell.run(steps[2])

            # 5. Admin owns the agent: a second person decides.
            tab.goto("/")
            card = open_card(tab, "Transfer example.com to Cloudflare")
            assert "You own this agent: separation of duties" in card.inner_text()
            tab.get_by_role("button", name="Log out").click()
            tab.wait_for_load_state()
            tab.goto("/")
            tab.wait_for_url("**/accounts/login/**")
            sign_in_first_time(tab, "alice", passwords["alice"])
            card = open_card(tab, "Transfer example.com to Cloudflare")
            card.locator("a").first.click()
            tab.wait_for_url("**/approvalrequest/**")
            shoot(tab, "request")
            tab.get_by_role("button", name="Approve", exact=True).click()
            acted = tab.locator(".request-votes")
            acted.wait_for()
            assert "Alice Approver (alice)" in acted.inner_text()

        # 6. The agent reads the decision.
        shell.run(steps[3])
        assert '"status":"approved"' in shell.last_stdout.replace(" ", ""), shell.last_stdout
