"""The chat example (examples/chat/app.py) in headless Chromium, through selenium.

The example runs as its README says (``python examples/chat/app.py``, on a
free port), on each core (``TURBOWS_NO_EXTENSIONS=1`` for the pure one).
Two tabs join one room and a third another room (the rooms are a
``turbows.Hub``'s); the two exchange messages, the third hears none of it,
one leaves, and only its room sees it leave. Then two chat processes (two
workers, on two ports) with their hub on one Redis (``TURBOWS_HUB_URL``):
a tab on each chats with the other through Redis. Needs Debian's ``chromium``
and ``chromium-driver``; skips without them.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _serve_chat(core: str, hub_url: str | None = None) -> Iterator[str]:
    """The chat example on ``core``, served by uvicorn on a free port (its hub on ``hub_url``): its base URL."""
    env = dict(os.environ)
    env.pop("TURBOWS_NO_EXTENSIONS", None)
    env.pop("TURBOWS_HUB_URL", None)
    if core == "pure":
        env["TURBOWS_NO_EXTENSIONS"] = "1"
    if hub_url is not None:
        env["TURBOWS_HUB_URL"] = hub_url
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


@pytest.fixture
def chat(core: str) -> Iterator[str]:
    """The chat example on ``core``, one process: its base URL."""
    with _serve_chat(core) as url:
        yield url


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
    if all(ord(character) <= 0xFFFF for character in text):
        field.send_keys(text)
    else:  # chromedriver types only the Basic Multilingual Plane; the page's own field takes the rest
        driver.execute_script("arguments[0].value = arguments[1]", field, text)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "send").click()  # type: ignore[attr-defined]


def _join(driver: object, url: str, name: str, room: str) -> str:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/?id={name}&room={room}")  # type: ignore[attr-defined]
    _wait_for(driver, lambda d: d.find_element(By.ID, "status").text == "connected", f"{name} to connect")
    assert driver.find_element(By.ID, "ws-id").text == name  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "room").text == room  # type: ignore[attr-defined]
    return driver.current_window_handle  # type: ignore[attr-defined]


def test_two_rooms_chat_and_one_leaves(chat: str, browser: object) -> None:
    driver = browser
    alice = _join(driver, chat, "alice", "kitchen")
    _wait_for_message(driver, "Client #alice joined kitchen")

    driver.switch_to.new_window("tab")  # type: ignore[attr-defined]
    bob = _join(driver, chat, "bob", "kitchen")
    _wait_for_message(driver, "Client #bob joined kitchen")

    driver.switch_to.new_window("tab")  # type: ignore[attr-defined]
    carol = _join(driver, chat, "carol", "garden")
    _wait_for_message(driver, "Client #carol joined garden")

    driver.switch_to.window(alice)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #bob joined kitchen")
    _say(driver, "hello bob")
    _wait_for_message(driver, "You wrote: hello bob")

    driver.switch_to.window(bob)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #alice says: hello bob")
    _say(driver, "hi alice, żółw 🐢")  # non-ASCII through the browser, the server and back
    _wait_for_message(driver, "You wrote: hi alice, żółw 🐢")

    driver.switch_to.window(alice)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #bob says: hi alice, żółw 🐢")
    assert "Client #alice says: hello bob" not in _messages(driver)  # the room's message went to the others
    driver.close()  # alice leaves: her tab closes its websocket

    driver.switch_to.window(bob)  # type: ignore[attr-defined]
    _wait_for_message(driver, "Client #alice left kitchen")
    assert _messages(driver) == [
        "Client #bob joined kitchen",
        "Client #alice says: hello bob",
        "You wrote: hi alice, żółw 🐢",
        "Client #alice left kitchen",
    ]

    driver.switch_to.window(carol)  # type: ignore[attr-defined]
    _say(driver, "anyone here?")
    _wait_for_message(driver, "You wrote: anyone here?")
    assert _messages(driver) == ["Client #carol joined garden", "You wrote: anyone here?"]  # the kitchen stayed out


def test_two_workers_chat_through_redis(core: str, redis_server: object, browser: object) -> None:
    """Alice's tab on one worker, Bob's on another: each hears the other only through Redis."""
    pytest.importorskip("redis.asyncio", reason='the Redis hub needs redis-py: pip install "turbows[redis]"')
    driver = browser
    url = redis_server.url()  # type: ignore[attr-defined]
    with _serve_chat(core, url) as first, _serve_chat(core, url) as second:
        assert first != second
        alice = _join(driver, first, "alice", "kitchen")
        _wait_for_message(driver, "Client #alice joined kitchen")
        driver.switch_to.new_window("tab")  # type: ignore[attr-defined]
        bob = _join(driver, second, "bob", "kitchen")
        _wait_for_message(driver, "Client #bob joined kitchen")

        driver.switch_to.window(alice)  # type: ignore[attr-defined]
        _wait_for_message(driver, "Client #bob joined kitchen")  # from the other worker
        _say(driver, "hello from worker one")
        _wait_for_message(driver, "You wrote: hello from worker one")

        driver.switch_to.window(bob)  # type: ignore[attr-defined]
        _wait_for_message(driver, "Client #alice says: hello from worker one")
        _say(driver, "hi, żółw 🐢 from worker two")
        _wait_for_message(driver, "You wrote: hi, żółw 🐢 from worker two")

        driver.switch_to.window(alice)  # type: ignore[attr-defined]
        _wait_for_message(driver, "Client #bob says: hi, żółw 🐢 from worker two")
        assert _messages(driver) == [
            "Client #alice joined kitchen",
            "Client #bob joined kitchen",
            "You wrote: hello from worker one",
            "Client #bob says: hi, żółw 🐢 from worker two",
        ]
        driver.close()

        driver.switch_to.window(bob)  # type: ignore[attr-defined]
        _wait_for_message(driver, "Client #alice left kitchen")
