"""The admin panel in the Django example's admin site, in headless Chromium on a real Redis: alice
(staff) signs in through the example's login, flips ``darkMode`` and a second browser context sees
it; a client pushed over its limit shows on the rate-limit page and passes again once reset; a
write without the CSRF token is refused with 403; bob (not staff) is refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from browser_support import Browser, Server
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait
from test_browser_admin_panel import limited, log_in

from bisman_ratelimit.stores import FlagAdmin

pytestmark = [pytest.mark.redis, pytest.mark.parametrize("redis_server", ["redis"], indirect=True)]

PANEL = "/admin/ratelimit"
NEW_FLAG = "form[action$='/flags/set']:not(#flags form)"


def test_the_admin_panel_in_the_django_example(
    redis_url: str,
    serve: Callable[[str], Server],
    browsers: Callable[[str, str], Browser],
) -> None:
    server = serve("django")
    alice = browsers(server.url, "alice")
    visitor = browsers(server.url, "visitor")

    # The admin site sends a signed-out user to the example's login, which brings her back.
    alice.open(PANEL + "/flags")
    assert alice.driver.current_url == server.url + "/login?next=/admin/ratelimit/flags"
    alice.fill(username="alice", password="correct horse")
    alice.click("#submit")
    assert alice.driver.current_url == server.url + PANEL + "/flags"
    assert alice.find("#user-tools strong").get_attribute("textContent") == "alice"  # shown in capitals
    alice.open("/admin/")
    assert "Rate limits and flags" in str(alice.find("#content-main").get_attribute("textContent"))
    alice.screenshot("django-admin-index")

    # darkMode created in the panel reaches the app in the second browser context.
    visitor.open("/")
    assert visitor.theme() == "light"
    alice.open(PANEL + "/flags")
    alice.find(f"{NEW_FLAG} input[name=name]").send_keys("darkMode")
    Select(alice.find(f"{NEW_FLAG} select[name=type]")).select_by_visible_text("bool")
    alice.find(f"{NEW_FLAG} input[name=value]").send_keys("true")
    alice.click(f"{NEW_FLAG} button")
    assert alice.find(".brl-note").text == "set darkMode"
    assert alice.texts("#flags tr td:first-child") == ["darkMode"]
    assert alice.texts("#history tr td:nth-child(2)") == ["alice"]
    alice.screenshot("django-admin-flags")

    def dark(_: object) -> bool:
        visitor.open("/")
        return visitor.theme() == "dark"

    WebDriverWait(visitor.driver, 10).until(dark)
    visitor.screenshot("django-home-dark")

    # Edited back to false in its row: the visitor's pages turn light again.
    Select(alice.find("#flags select[name=value]")).select_by_visible_text("false")
    alice.click("#flags form[action$='/flags/set'] button")
    assert alice.find(".brl-note").text == "set darkMode"
    assert alice.texts("#history tr td:nth-child(5)") == ["false", "true"]

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
    alice.driver.execute_script("document.getElementById('clients').scrollIntoView()")
    alice.screenshot("django-admin-limits")

    # Reset it, with the confirmation step: the visitor's next try passes.
    alice.click("#clients form button")
    assert "Reset a client's limit?" in alice.texts("h1")
    alice.screenshot("django-admin-confirm-reset")
    alice.click("form input[name=confirm] ~ button")
    assert alice.find(".brl-note").text.startswith("reset ")
    assert limited(alice) == [["No client is limited."]]
    log_in(visitor, "bob", "battery staple")
    assert visitor.find("#user").text == "bob"

    # A write whose form lost its CSRF token is refused by Django with 403, and changes nothing.
    alice.open(PANEL + "/flags")
    alice.driver.execute_script(
        "document.querySelectorAll('input[name=csrfmiddlewaretoken]').forEach(e => e.remove())"
    )
    Select(alice.find("#flags select[name=value]")).select_by_visible_text("true")
    alice.click("#flags form[action$='/flags/set'] button")
    assert "Forbidden (403)" in alice.body()
    assert "CSRF verification failed. Request aborted." in alice.body()
    alice.screenshot("django-admin-csrf-refused")
    with FlagAdmin(redis_url) as flags:
        flag = flags.get("darkMode")
    assert flag is not None and flag.value is False

    # bob is signed in but not staff: the admin site and the panel send him back to the login.
    for path in (PANEL + "/flags", "/admin/"):
        visitor.open(path)
        assert visitor.driver.current_url == f"{server.url}/login?next={path}"
        assert visitor.find("#error").text == f"bob may not open {path}: log in as a staff user."
    assert "Feature flags" not in visitor.body()
    visitor.screenshot("django-admin-refused")
