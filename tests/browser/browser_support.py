"""What the browser tests share: the example servers and a Chromium window with explicit waits."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_apps"
SCREENSHOTS = ROOT / "build" / "screenshots"
WAIT = 10.0  # seconds an explicit wait may take before the test fails

# What uvicorn serves for each example, and from which directory.
APPS = {
    "starlette": (EXAMPLES, "starlette_app:app"),
    "django": (EXAMPLES / "django_project", "example_site.asgi:application"),
}

# Every screenshot this session took, for the summary at the end.
saved: list[Path] = []


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for_port(port: int, server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the example exited at start:\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polls the port; no test step waits on time
    raise RuntimeError(f"the example did not listen on port {port} within {timeout} s:\n{server.output()}")


@dataclass
class Browser:
    """One headless Chromium with its own profile: cookies are not shared with another Browser."""

    driver: WebDriver
    base: str
    shots: Path
    name: str
    taken: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        condition = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        element: WebElement = WebDriverWait(self.driver, WAIT).until(condition)
        return element

    def texts(self, css: str) -> list[str]:
        return [element.text for element in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def click(self, css: str) -> None:
        """Clicks and waits until the page that the click loads has replaced this one, and loaded."""
        self.driver.execute_script("window.__left = true")
        self.find(css).click()
        # A new document has no marker. While the browser swaps documents a query may fail
        # with an error of its own, hence the ignored exceptions.
        WebDriverWait(self.driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
            lambda driver: driver.execute_script(
                "return window.__left === undefined && document.readyState === 'complete'"
            )
        )

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            box = self.find(f"#{name}")
            box.clear()
            box.send_keys(value)

    def theme(self) -> str:
        return str(self.find("body").get_attribute("data-theme"))

    def body(self) -> str:
        return str(self.find("body").text)

    def screenshot(self, page: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{len(list(self.shots.iterdir())) + 1:02d}-{self.name}-{page}.png"
        self.driver.save_screenshot(str(path))
        saved.append(path)
        self.taken.append(page)


def chromium() -> WebDriver:
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1000,760",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # The driver Debian installs beside it, rather than one selenium would download.
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)
