"""Screenshots of every console page, taken with Debian's headless Chromium against `govbus demo`.

    .venv/bin/python tools/console_screenshots.py docs/console

Runs the demo (its own local broker) slowly enough to be looked at, produces one garbage record so
the dead-letter pages have something to show, waits for the pages to show it, saves a 1280x800 PNG
per page, then stops the demo with SIGINT.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PAGES = (
    ("topology", "/"),
    ("lag", "/lag"),
    ("throughput", "/throughput"),
    ("dead-letters", "/dead-letters"),
    ("gate", "/gate"),
    ("signatures", "/signatures"),
    ("events", "/events?kind=tool_call_blocked"),
    ("audit", "/audit"),
)


def wait(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except WebDriverException:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="govbus-shots-"))
    env = {**os.environ, "GOVBUS_CONSOLE__PORT": "0"}
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "govbus",
            "demo",
            "--events",
            "20000",
            "--rate",
            "60",
            "--keep-running",
            "--out",
            str(work / "demo"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert demo.stdout is not None
    url = topic = bootstrap = None
    for line in demo.stdout:
        print(line, end="", flush=True)
        if m := re.search(r"Apache Kafka \S+ at (\S+),", line):
            bootstrap = m.group(1)
        if m := re.search(r"• topic (\S+)", line):
            topic = m.group(1)
        if m := re.search(r"• console at (\S+)", line):
            url = m.group(1)
            break
    if not (url and topic and bootstrap):
        demo.kill()
        raise SystemExit("the demo did not print its console URL")
    profile = tempfile.mkdtemp(prefix="govbus-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        p = Producer({"bootstrap.servers": bootstrap})
        p.produce(topic, value=b"not a governance event", key=b"garbage")
        p.flush(10)
        driver.get(url + "/dead-letters")
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".reason-cell"), 60, "a dead letter")
        # Let the history fill: the charts need a dozen readings to be worth a look.
        driver.get(url + "/throughput")

        def readings() -> bool:
            m = re.search(r"last (\d+) readings", driver.find_element(By.TAG_NAME, "main").text)
            return m is not None and int(m.group(1)) >= 12

        wait(readings, 180, "a dozen readings")
        for name, path in PAGES:
            driver.get(url + path)
            wait(lambda: driver.find_element(By.ID, "live"), 10, name)
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"saved {out / name}.png", flush=True)
        driver.get(url + "/dead-letters")
        href = wait(lambda: driver.find_element(By.CSS_SELECTOR, "a.dl-link").get_attribute("href"), 10, "a link")
        driver.get(str(href))
        wait(lambda: driver.find_element(By.ID, "dl-reason"), 10, "the dead letter")
        driver.save_screenshot(str(out / "dead-letter.png"))
        print(f"saved {out / 'dead-letter.png'}", flush=True)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            demo.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console")))
