"""A headless Chromium for the console's browser tests: Debian's ``chromium`` driven through its
``chromedriver`` with Selenium (scripts/system-deps.sh installs both; no browser is downloaded).

Selenium is synchronous and the relay under test runs in the test's event loop, so every browser
step runs in a thread (:meth:`Browser.run`) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def available() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing: run scripts/system-deps.sh (apt-get install chromium chromium-driver)"
    return None


class Browser:
    def __init__(self, base: str, out: Path, width: int = 1280, height: int = 1000) -> None:
        self.base = base.rstrip("/")
        self.out = out
        self.downloads = out / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                    "--disable-background-networking", "--disable-sync", "--lang=en-US"):
            opts.add_argument(arg)
        opts.add_experimental_option("prefs", {"download.default_directory": str(self.downloads),
                                               "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(self.downloads)})
        self.shots = 0
        self.width = width
        self.mobile = width < 500  # below Chrome's smallest window: emulate a phone's viewport instead
        if self.mobile:
            self._viewport(height)

    def _viewport(self, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": True})

    async def run(self, step: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(step, *args)

    # --- synchronous helpers, for steps run with ``run`` -----------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, value: str) -> None:
        el = self.find(css)
        el.clear()
        el.send_keys(value)

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        # a page may be replaced between finding an element and reading it: look again
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException,
                                                 NoAlertPresentException)).until(lambda _d: predicate())

    def text(self) -> str:
        return str(self.find("body").text)

    def shot(self, name: str) -> Path:
        """Save a screenshot of the whole page under the test's output directory."""
        self.shots += 1
        path = self.out / f"{self.shots:02d}-{name}.png"
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        full = min(max(int(height), 600), 4000)
        if self.mobile:
            self._viewport(full)
        else:
            self.driver.set_window_size(self.driver.get_window_size()["width"], full + 120)
        self.driver.save_screenshot(str(path))
        return path

    def sign_in(self, api_user: str, key: str) -> None:
        self.open("/console/")
        self.fill("#api_user", api_user)
        self.fill("#api_key", key)
        self.find("#api_key").submit()
        self.wait(lambda: "/console/status" in self.driver.current_url)

    def sign_in_operator(self, token: str) -> None:
        self.open("/console/signin")
        self.fill("#admin_token", token)
        self.find("#admin_token").submit()
        self.wait(lambda: "/console/status" in self.driver.current_url)

    def reuse(self, base: str, out: Path) -> None:
        """Hand this browser to the next test as if it were new: that test's relay and output
        directory; nothing of the last test's pages, cookies, storage, cache or window size."""
        self.base = base.rstrip("/")
        self.out = out
        self.downloads = out / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(self.downloads)})
        self.shots = 0
        if self.mobile:
            self._viewport(1000)
        else:
            self.driver.set_window_size(self.width, 1000)

    def reset(self) -> None:
        """After a test: leave a blank page and forget what the test's pages stored."""
        try:
            self.driver.switch_to.alert.dismiss()
        except NoAlertPresentException:
            pass
        self.driver.get("about:blank")
        self.driver.delete_all_cookies()  # cookies belong to a host, whatever the port: clear them all
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        self.driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": self.base, "storageTypes": "all"})

    def close(self) -> None:
        self.driver.quit()
