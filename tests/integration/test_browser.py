"""The chat example (examples/chat/app.py) in headless Chromium, through selenium.

The example runs as its README says (``python examples/chat/app.py``, on a
free port), on each core (``TURBOWS_NO_EXTENSIONS=1`` for the pure one).
Two tabs join, exchange messages, one leaves, and the other sees it leave.
Needs Debian's ``chromium`` and ``chromium-driver``; skips without them.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import STOP_TIMEOUT, _die_with_parent

pytestmark = pytest.mark.browser

CHAT_APP = Path(__file__).resolve().parents[2] / "examples" / "chat" / "app.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 15.0


@pytest.fixture
def chat(core: str) -> Iterator[str]:
    """The chat example on ``core``, served by uvicorn on a free port: its base URL."""
    env = dict(os.environ)
    env.pop("TURBOWS_NO_EXTENSIONS", None)
    if core == "pure":
        env["TURBOWS_NO_EXTENSIONS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, str(CHAT_APP), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=_die_with_parent,
    )
    try:
        output, port = _wait_for_port(process)
        assert f"turbows core: {core}" in output, output
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()


def _wait_for_port(process: subprocess.Popen[bytes]) -> tuple[str, int]:
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + 20
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            found = re.search(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)", output)
            if found:
                return output.decode(errors="replace"), int(found.group(1))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the chat example did not start within 20s:\n{output.decode(errors='replace')}")
            if selector.select(remaining):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"the chat example exited:\n{output.decode(errors='replace')}")
                output += chunk


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        # background tabs must keep handling their websocket at full speed
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _messages(driver: object) -> list[str]:
    from selenium.webdriver.common.by import By

    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#messages li")]  # type: ignore[attr-defined]


def _wait_for(driver: object, condition: object, what: str) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"waited {WAIT}s for {what}; the page shows {_messages(driver)}")


def _wait_for_message(driver: object, message: str) -> None:
    _wait_for(driver, lambda d: message in _messages(d), repr(message))


def _say(driver: object, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "messageText")  # type: ignore[attr-defined]
    if any(ord(char) > 0xFFFF for char in text):
        # ChromeDriver's send_keys refuses characters beyond the BMP: set the value in the page.
        driver.execute_script("arguments[0].value = arguments[1];", field, text)  # type: ignore[attr-defined]
    else:
        field.send_keys(text)
    driver.find_element(By.ID, "send").click()  # type: ignore[attr-defined]


def _join(driver: object, url: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/?id={name}")  # type: ignore[attr-defined]
    _wait_for(driver, lambda d: d.find_element(By.ID, "status").text == "connected", f"{name} to connect")
    assert driver.find_element(By.ID, "ws-id").text == name  # type: ignore[attr-defined]
    return driver.current_window_handle  # type: ignore[attr-defined]


def test_two_pages_chat_and_one_leaves(chat: str, browser: object) -> None:
    driver = browser
    alice = _join(driver, chat, "alice")
    _wait_for_message(driver, "Client #alice joined the chat")

    driver.switch_to.new_window("tab")  # type: ignore[attr-defined]
    bob = _join(driver, chat, "bob")
    _wait_for_message(driver, "Client #bob joined the chat")

    driver.switch_to.window(alice)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #bob joined the chat")
    _say(driver, "hello bob")
    _wait_for_message(driver, "You wrote: hello bob")
    _wait_for_message(driver, "Client #alice says: hello bob")

    driver.switch_to.window(bob)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #alice says: hello bob")
    assert "You wrote: hello bob" not in _messages(driver)  # the personal message went to alice only
    _say(driver, "hi alice, żółw 🐢")  # non-ASCII through the browser, the server and back
    _wait_for_message(driver, "Client #bob says: hi alice, żółw 🐢")

    driver.switch_to.window(alice)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #bob says: hi alice, żółw 🐢")
    driver.close()  # alice leaves: her tab closes its websocket

    driver.switch_to.window(bob)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #alice left the chat")
    assert _messages(driver) == [
        "Client #bob joined the chat",
        "Client #alice says: hello bob",
        "You wrote: hi alice, żółw 🐢",
        "Client #bob says: hi alice, żółw 🐢",
        "Client #alice left the chat",
    ]
