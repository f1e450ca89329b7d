"""A person's visit to the Starlette and Django examples, in headless Chromium, on a real Redis.

Log in (the session id changes), post and read chat messages, join a call
room, see ``darkMode`` flipped through the flags API reach a second browser
context, be refused with 429 after five wrong passwords, log out.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from browser_support import Browser, Server
from selenium.webdriver.support.wait import WebDriverWait

from bisman_ratelimit.stores import FlagAdmin

# One server kind is enough here: the stores' behaviour on each is held by their own tests.
pytestmark = [pytest.mark.redis, pytest.mark.parametrize("redis_server", ["redis"], indirect=True)]


def log_in(browser: Browser, username: str, password: str) -> None:
    browser.open("/login")
    browser.fill(username=username, password=password)
    browser.click("#submit")


@pytest.mark.parametrize("app", ["starlette", "django"])
def test_a_visit_to_the_example(
    app: str,
    redis_url: str,
    serve: Callable[[str], Server],
    browsers: Callable[[str, str], Browser],
) -> None:
    server = serve(app)
    alice = browsers(server.url, "alice")

    # Anonymous first: the session page starts a session; logging in gives it a new id.
    alice.open("/")
    assert alice.find("#storage").text == "redis"
    assert alice.theme() == "light"
    alice.screenshot("home")
    alice.open("/session")
    before = alice.find("#fingerprint").text
    alice.open("/login")
    alice.screenshot("login")
    log_in(alice, "alice", "correct horse")
    assert alice.driver.current_url == server.url + "/session"
    assert alice.find("#user").text == "alice"
    assert alice.find("#field-user").text == "alice"
    after = alice.find("#fingerprint").text
    assert len(after) == 10 and after not in (before, "none")
    assert alice.find("#ttl").text == "1800"  # renewed to the full idle timeout by this request
    alice.screenshot("session")

    # Chat: two messages in, read back oldest first, with their author.
    alice.open("/chat/browser-test")
    for text in ("hello from the browser", "a second <message>"):
        alice.fill(text=text)
        alice.click("#send")
    assert alice.texts("#messages .message") == [
        "alice: hello from the browser",
        "alice: a second <message>",
    ]
    alice.screenshot("chat")

    # A call room: join, and see yourself among the participants.
    alice.open("/calls/browser-room")
    assert alice.texts("#participants .participant") == []
    alice.click("#join")
    assert alice.texts("#participants .participant") == ["alice"]
    alice.click("#heartbeat")
    assert alice.texts("#participants .participant") == ["alice"]
    alice.screenshot("call-room")

    # A second browser context, signed out, sees the flag change made through the flags API.
    visitor = browsers(server.url, "visitor")
    visitor.open("/")
    assert visitor.theme() == "light"
    with FlagAdmin(redis_url) as flags:
        assert flags.set("darkMode", True)

    def dark(_: object) -> bool:
        visitor.open("/")
        return visitor.theme() == "dark"

    WebDriverWait(visitor.driver, 10).until(dark)
    visitor.screenshot("home-dark")
    visitor.open("/flags")
    assert visitor.texts("#flags li") == ["darkMode = True"]
    visitor.screenshot("flags")

    # Five wrong passwords from this address, then 429 whatever the password.
    for _ in range(5):
        log_in(visitor, "bob", "wrong")
        assert visitor.find("#error").text == "Wrong user or password."
    log_in(visitor, "bob", "battery staple")
    problem = json.loads(visitor.body())
    assert (problem["status"], problem["title"]) == (429, "Too Many Requests")
    assert problem["violated-policies"] == ["/login-60s"]
    visitor.screenshot("login-429")

    # Leave the room, log out: the session is gone, and with it the user.
    alice.open("/calls/browser-room")
    alice.click("#leave")
    assert alice.texts("#participants .participant") == []
    alice.click("#logout")
    assert alice.find("#login-link").text == "Log in"
    alice.open("/session")
    assert alice.texts("#user") == []
    assert alice.texts("#field-user") == []
    assert alice.taken == ["home", "login", "session", "chat", "call-room"]
