"""The admin panel in the Starlette example, in headless Chromium on a real Redis: a staff user flips
``darkMode`` and a second browser context sees it; a client pushed over its limit shows on the
rate-limit page and passes again once reset; a write without the CSRF token and a non-staff user
are refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from browser_support import Browser, Server
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait

from bisman_ratelimit.stores import FlagAdmin

pytestmark = [pytest.mark.redis, pytest.mark.parametrize("redis_server", ["redis"], indirect=True)]

PANEL = "/admin/ratelimit"


def log_in(browser: Browser, username: str, password: str) -> None:
    browser.open("/login")
    browser.fill(username=username, password=password)
    browser.click("#submit")


def limited(browser: Browser) -> list[list[str]]:
    """The rows of the rate-limit page's table of limited clients, as their cells' text."""
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "#clients tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows[1:]]


def test_the_admin_panel_in_the_starlette_example(
    redis_url: str,
    serve: Callable[[str], Server],
    browsers: Callable[[str, str], Browser],
) -> None:
    server = serve("starlette")
    alice = browsers(server.url, "alice")
    visitor = browsers(server.url, "visitor")
    alice.driver.set_window_size(1000, 900)  # the rate-limit page down to its limited clients
    log_in(alice, "alice", "correct horse")

    # darkMode created in the panel reaches the app in the second browser context.
    visitor.open("/")
    assert visitor.theme() == "light"
    alice.open(PANEL + "/flags")
    form = "form[action$='/flags/set']:not(.inline)"
    alice.find(f"{form} input[name=name]").send_keys("darkMode")
    Select(alice.find(f"{form} select[name=type]")).select_by_visible_text("bool")
    alice.find(f"{form} input[name=value]").send_keys("true")
    alice.click(f"{form} button")
    assert alice.find(".note").text == "set darkMode"
    assert alice.texts("#flags tr td:first-child") == ["darkMode"]
    alice.screenshot("admin-flags")

    def dark(_: object) -> bool:
        visitor.open("/")
        return visitor.theme() == "dark"

    WebDriverWait(visitor.driver, 10).until(dark)
    visitor.screenshot("home-dark")

    # Edited back to false in its row: the visitor's pages turn light again.
    Select(alice.find("#flags select[name=value]")).select_by_visible_text("false")
    alice.click("#flags form[action$='/flags/set'] button")
    assert alice.find(".note").text == "set darkMode"

    def light(_: object) -> bool:
        visitor.open("/")
        return visitor.theme() == "light"

    WebDriverWait(visitor.driver, 10).until(light)

    # The visitor's address over the login form's limit: it shows on the rate-limit page.
    alice.open(PANEL + "/limits")
    assert limited(alice) == [["No client is limited."]]
    for _ in range(5):
        log_in(visitor, "bob", "wrong")
        assert visitor.find("#error").text == "Wrong user or password."
    log_in(visitor, "bob", "battery staple")
    assert json.loads(visitor.body())["status"] == 429
    alice.open(PANEL + "/limits")
    # One row: the 5/minute limit of the visitor's address on /login (the hourly one has room left).
    rows = [row for row in limited(alice) if "/login" in row[0]]
    assert [row[1:4] for row in rows] == [["5/60s", "sliding_window", "0"]], limited(alice)
    alice.screenshot("admin-limits")

    # Reset it, with the confirmation step: the visitor's next try passes.
    alice.click("#clients form button")
    alice.screenshot("admin-confirm-reset")
    alice.click("form input[name=confirm] ~ button")
    assert alice.find(".note").text.startswith("reset ")
    assert limited(alice) == [["No client is limited."]]
    log_in(visitor, "bob", "battery staple")
    assert visitor.find("#user").text == "bob"

    # A write whose form lost its CSRF token is refused, and changes nothing.
    alice.open(PANEL + "/flags")
    alice.driver.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())"
    )
    alice.find(f"{form} input[name=name]").send_keys("darkMode")
    Select(alice.find(f"{form} select[name=type]")).select_by_visible_text("bool")
    alice.find(f"{form} input[name=value]").send_keys("true")
    alice.click(f"{form} button")
    assert "CSRF token missing or wrong" in alice.body()
    with FlagAdmin(redis_url) as flags:
        flag = flags.get("darkMode")
    assert flag is not None and flag.value is False

    # bob is not staff: the panel refuses him.
    visitor.open(PANEL + "/flags")
    assert "not authorized to use the admin panel" in visitor.body()
    visitor.screenshot("admin-refused")
