"""The operator console in a real browser: Debian's Chromium, headless, through /usr/bin/chromedriver.

One module-scoped topology on the session's real broker: a 3-partition topic, two in-process sink
runtimes (``file``, ``audit``) with their health servers, a producer emitting a trickle of events
(and gate decisions), and the console itself. Each test loads pages and waits, with bounded
polling, for what the page shows to match ``govbus lag``, ``govbus gate check`` and the topic.

``GOVBUS_CONSOLE_SCREENSHOTS=<dir>`` also saves a 1280x800 PNG of each page there (docs/console/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("selenium")
pytest.importorskip("starlette")

from _sinks import PRODUCER, TRACEPARENT, events, http_get, produce, records, wait_for
from confluent_kafka import Producer
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from govbus._contract import Encoder
from govbus._record import to_record
from govbus._settings import load_settings
from govbus.console import ConsoleSettings
from govbus.console._server import ConsoleServer
from govbus.consumers import SinkRuntime
from govbus.consumers._lag import sink_lag
from govbus.consumers.sinks._audit import AuditSink
from govbus.consumers.sinks._file import FileSink
from govbus.event import GovernanceEvent
from govbus.gate._gate import Decision, decision_event
from govbus.localkafka import LocalBroker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SINKS = ("audit", "file")
SHOTS = os.environ.get("GOVBUS_CONSOLE_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()),
    reason="needs Debian's chromium and chromium-driver (make system-deps installs them)",
)


class Trickle:
    """Emits a few events per second until stopped; ``hold`` pauses it (for stable numbers)."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 8.0) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        self.topic, self.rate = topic, rate
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.base = events(32, seed=5)

    def _run(self) -> None:
        enc = Encoder()
        while not self.stop.is_set():
            if not self.running.is_set():
                self.producer.flush(10)
                self.idle.set()
                self.running.wait(0.2)
                continue
            self.idle.clear()
            e = self.base[self.sent % len(self.base)].replace(event_id=uuid.uuid4().hex)
            r = to_record(e, PRODUCER, enc, traceparent=TRACEPARENT)
            self.producer.produce(self.topic, value=r.value, key=r.key, headers=r.headers)
            self.producer.poll(0)
            self.sent += 1
            self.stop.wait(1 / self.rate)  # pacing the load, not waiting for the system under test
        self.producer.flush(10)

    def hold(self) -> None:
        self.running.clear()
        assert self.idle.wait(15), "producer did not go idle"

    def go(self) -> None:
        self.running.set()


@dataclass
class Topology:
    bootstrap: str
    topic: str
    console: ConsoleServer
    runtimes: dict[str, tuple[SinkRuntime, threading.Thread]]
    trickle: Trickle
    env: dict[str, str]
    policy: Path
    ledger: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.console.url


def _start_sink(
    name: str, sink: Any, bootstrap: str, topic: str, sink_class: str | None = None
) -> tuple[SinkRuntime, threading.Thread]:
    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topic=topic,
        sink={"health": {"port": 0}, "commit_interval_ms": 100, "verify": {"mode": "off"}, "sink_class": sink_class},
    )
    runtime = SinkRuntime(sink, settings, name=name)
    thread = threading.Thread(target=runtime.run, name=f"sink-{name}", daemon=True)
    thread.start()
    assert runtime.assigned.wait(60), f"sink {name} got no partitions"
    return runtime, thread


@pytest.fixture(scope="module")
def topo(kafka_bootstrap: str, new_topic: Callable[..., str]) -> Iterator[Topology]:
    topic = new_topic(partitions=3, prefix="console")
    tmp = Path(tempfile.mkdtemp(prefix="govbus-console-"))
    ledger = tmp / "audit.ledger"
    # History first: sample events of every kind and a few gate decisions, as a kernel would write them.
    decisions = [
        decision_event(Decision(True, f"agent-{i}", (), None, 0.01, "enforce", False)).replace(
            event_id=uuid.uuid4().hex
        )
        for i in range(3)
    ] + [
        decision_event(
            Decision(False, "agent-denied", ("sink:audit: group has 0 live member(s)",), None, 0.0, "enforce", True)
        )
    ]
    evs: list[GovernanceEvent] = events(60, seed=3) + decisions
    produce(kafka_bootstrap, topic, records(evs))
    runtimes = {
        # Declares a class other than its name's shipped default (debug): the console shows the declared one.
        "file": _start_sink("file", FileSink(tmp / "events.jsonl"), kafka_bootstrap, topic, "observability"),
        "audit": _start_sink("audit", AuditSink(path=ledger, fsync=False), kafka_bootstrap, topic),
    }
    policy = tmp / "policy.yaml"
    policy.write_text(
        "checks:\n  topic: {min_partitions: 3, require_min_isr: false}\n  producer: {enabled: false}\n"
        "  sinks:\n    - {name: file}\n    - {name: audit}\n"
    )
    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, topic=topic)
    console = ConsoleSettings(
        port=0,
        refresh_s=0.5,
        timeout_s=2.0,
        actions_enabled=True,
        sink_health_urls={name: rt.health_url or "" for name, (rt, _) in runtimes.items()},
        audit_ledger=ledger,
        audit_verify_interval_s=1,
        gate_policy=policy,
    )
    server = ConsoleServer(settings, console).start()
    trickle = Trickle(kafka_bootstrap, topic)
    trickle.thread.start()
    env = {
        **os.environ,
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_GATE__POLICY_FILE": str(policy),
    }
    topo = Topology(kafka_bootstrap, topic, server, runtimes, trickle, env, policy, ledger)
    yield topo
    trickle.stop.set()
    trickle.thread.join(15)
    server.close()
    for rt, thread in runtimes.values():
        rt.stop()
        thread.join(30)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="govbus-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The network is closed: without these Chromium waits on connections it will never get.
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
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager must not try to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: webdriver.Chrome, element_id: str) -> str | None:
    """The element's text, None if absent. The live part is swapped every refresh, so an element
    found may be replaced before its text is read: find it again (a swap takes microseconds)."""
    for _ in range(20):
        try:
            return str(driver.find_element(By.ID, element_id).text)
        except NoSuchElementException:
            return None
        except StaleElementReferenceException:
            continue
    return None


def texts(driver: webdriver.Chrome, css: str) -> list[str]:
    """The texts of every element matching ``css``, read in one script run (no stale elements)."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText);", css
    )
    return [str(t) for t in found]


def await_page(driver: webdriver.Chrome, check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Bounded polling of the live page (it updates itself; no reload)."""

    def probe() -> Any:
        try:
            return check()
        except (NoSuchElementException, StaleElementReferenceException, WebDriverException):
            return None

    return wait_for(probe, timeout, interval=0.2, what=what)


def shot(driver: webdriver.Chrome, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def cli_json(topo: Topology, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "govbus", *args, "--json"], env=topo.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def settle(topo: Topology) -> None:
    """Holds the producer and waits until every sink committed everything (numbers stop moving)."""
    topo.trickle.hold()
    conf = {"bootstrap.servers": topo.bootstrap}

    def caught_up() -> bool:
        groups = {g.sink: g for g in sink_lag(conf, groups=[f"govbus.sink.{s}" for s in SINKS], timeout=5)}
        return all(name in groups and groups[name].total == 0 and groups[name].partitions for name in SINKS)

    wait_for(caught_up, 60, interval=0.2, what="sinks caught up")


def test_topology_page_matches_govbus_lag_and_the_topic(topo: Topology, browser: webdriver.Chrome) -> None:
    settle(topo)
    try:
        lag = {g["sink"]: g for g in cli_json(topo, "lag")}
        browser.get(topo.url + "/")
        end = sum(p["end"] for p in lag["file"]["partitions"] if p["topic"] == topo.topic)
        await_page(browser, lambda: text_of(browser, "topic-end") == str(end), what=f"topic end {end} on the page")
        assert text_of(browser, "topic-partitions") == "3"
        for name in SINKS:
            assert text_of(browser, f"lag-{name}") == str(lag[name]["lag"]) == "0"
            assert text_of(browser, f"members-{name}") == str(lag[name]["members"])
            assert text_of(browser, f"state-{name}") == lag[name]["state"]
        # The class each sink declares (its members' client.id), as `govbus lag` and the gate read it.
        assert text_of(browser, "class-audit") == lag["audit"]["declared_class"] == "audit"
        assert text_of(browser, "class-file") == lag["file"]["declared_class"] == "observability"
        assert text_of(browser, "class-default-audit") is None
        assert text_of(browser, "class-default-file") is None
        await_page(browser, lambda: text_of(browser, "health-file") == "ready", what="file sink ready")
        await_page(browser, lambda: PRODUCER.name in browser.find_element(By.ID, "producers").text, what="the producer")
        shot(browser, "topology")

        browser.get(topo.url + "/lag")
        for name in SINKS:
            for p in (p for p in lag[name]["partitions"] if p["topic"] == topo.topic):
                await_page(
                    browser,
                    lambda n=name, p=p: text_of(browser, f"committed-{n}-{p['partition']}") == str(p["committed"]),
                    what=f"{name} committed offset of partition {p['partition']}",
                )
    finally:
        topo.trickle.go()
    await_page(browser, lambda: browser.find_element(By.ID, "lag-file"), what="lag chart")
    shot(browser, "lag")


def test_a_group_without_a_declared_class_shows_the_shipped_default_marked_as_such(
    topo: Topology, browser: webdriver.Chrome
) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    name = f"otlp-{uuid.uuid4().hex[:6]}"  # an otlp sink's group whose members are gone: nobody declares
    group = f"govbus.sink.{name}"
    c = Consumer({"bootstrap.servers": topo.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topo.topic, 0, 0)], asynchronous=False)
    c.close()
    try:
        browser.get(topo.url + "/")
        await_page(browser, lambda: text_of(browser, f"class-{name}") == "observability", what=f"the row of {name}")
        assert text_of(browser, f"class-default-{name}") == "(default)"
        assert text_of(browser, "class-file") == "observability"  # declared, beside it
        assert text_of(browser, "class-default-file") is None
    finally:  # best effort: the other tests look at their own sinks only
        with contextlib.suppress(Exception):
            AdminClient({"bootstrap.servers": topo.bootstrap}).delete_consumer_groups([group])[group].result(10)


def test_gate_page_matches_govbus_gate_check(topo: Topology, browser: webdriver.Chrome) -> None:
    check = cli_json(topo, "gate", "check", "--policy", str(topo.policy))
    browser.get(topo.url + "/gate")
    expected = {c["name"]: ("pass" if c["ok"] else "FAIL") for c in check["checks"]}
    assert set(expected) == {"broker", "topic", "sink:file", "sink:audit"}, check

    def shown() -> dict[str, str]:
        pairs = browser.execute_script(
            "return Array.from(document.querySelectorAll('#gate-checks td[data-check]'))"
            ".map(e => [e.dataset.check, e.innerText]);"
        )
        return {str(k): str(v) for k, v in pairs}

    await_page(browser, lambda: shown() == expected, what=f"gate checks {expected}")
    verdict = "admitting" if check["allowed"] else "DENYING"
    assert text_of(browser, "gate-verdict") == verdict
    decisions = text_of(browser, "gate-decisions") or ""
    assert "agent-denied" in decisions
    assert "deny" in decisions
    shot(browser, "gate")


def test_events_search_throughput_signatures_and_audit(topo: Topology, browser: webdriver.Chrome) -> None:
    browser.get(topo.url + "/events?agent=agent-denied")
    await_page(browser, lambda: text_of(browser, "event-count") == "1", what="one event of agent-denied")
    browser.get(topo.url + "/events?kind=tool_call_blocked")
    rows = texts(browser, "#events tr")[1:]
    assert rows
    assert all("tool_call_blocked" in r for r in rows)
    browser.get(topo.url + "/events")
    shot(browser, "events")

    browser.get(topo.url + "/throughput")
    await_page(browser, lambda: float(text_of(browser, "rate-topic") or 0) > 0, what="a positive produce rate")
    shot(browser, "throughput")

    browser.get(topo.url + "/signatures")
    await_page(browser, lambda: browser.find_element(By.ID, "verdicts"), what="verdict table")
    shot(browser, "signatures")

    browser.get(topo.url + "/audit")
    await_page(browser, lambda: text_of(browser, "audit-verdict") == "INTACT", what="the ledger verified intact")
    assert int(text_of(browser, "audit-entries") or 0) > 0
    shot(browser, "audit")


def test_garbage_record_appears_as_a_dead_letter_and_can_be_replayed(topo: Topology, browser: webdriver.Chrome) -> None:
    browser.get(topo.url + "/dead-letters")
    before = int(await_page(browser, lambda: text_of(browser, "dlq-total-file"), what="dead-letter count") or 0)
    p = Producer({"bootstrap.servers": topo.bootstrap})
    p.produce(topo.topic, value=b"this is not an Avro record", key=b"garbage")
    assert p.flush(10) == 0
    # The page updates itself: no reload.
    await_page(browser, lambda: text_of(browser, "dlq-total-file") == str(before + 1), what="a new dead letter")
    await_page(
        browser,
        lambda: "decode:" in browser.find_element(By.CSS_SELECTOR, "#dlq-file .reason-cell").text,
        what="the decode reason",
    )
    shot(browser, "dead-letters")
    # The live part is swapped every refresh: take the link's address rather than click a node
    # that may be replaced under the click.
    href = await_page(
        browser,
        lambda: browser.find_element(By.CSS_SELECTOR, "#dlq-file a.dl-link").get_attribute("href"),
        what="the dead letter's link",
    )
    browser.get(href)
    await_page(browser, lambda: (text_of(browser, "dl-reason") or "").startswith("decode:"), what="dead letter view")
    shot(browser, "dead-letter")
    browser.find_element(By.ID, "replay").click()
    await_page(browser, lambda: browser.find_element(By.ID, "confirm"), what="the confirmation page")
    browser.find_element(By.ID, "confirm").click()
    await_page(browser, lambda: "Replayed" in (text_of(browser, "done-message") or ""), what="replay done")
    # The sink reads it again from its replay topic, fails again: a second dead letter.
    browser.get(topo.url + "/dead-letters")
    await_page(
        browser,
        lambda: text_of(browser, "dlq-total-file") == str(before + 2),
        what="the replayed record dead-lettered again",
    )


def test_bad_input_gives_a_clear_page_never_a_trace(topo: Topology, browser: webdriver.Chrome) -> None:
    cases = {
        "/dead-letters/file/0/999999": (404, "No dead letter at"),
        "/dead-letters/nosuchsink/0/1": (404, "No sink named"),
        "/dead-letters/file/x/1": (404, "is not a number"),
        "/no/such/page": (404, "no page at"),
        "/events?agent=" + "a" * 5000: (400, "at most 200"),
        "/events?kind=nonsense": (400, "not an event kind"),
    }
    for path, (status, text) in cases.items():
        code, body = http_get(topo.url + path)
        assert code == status, (path, code, body[:300])
        assert text in body, (path, body[:500])
        assert "Traceback" not in body, (path, body[:500])
    browser.get(topo.url + "/events?session=" + "s" * 10_000)
    assert "at most 200" in (text_of(browser, "error-message") or "")
    code, body = http_get(topo.url + "/actions/replay?sink=file&partition=0&offset=424242")
    assert code == 404
    assert "No dead letter" in body
    req = urllib.request.Request(topo.url + "/actions/pause?sink=file", data=b"confirm=forged", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:  # no confirmation: nothing happens
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 400


def test_pause_and_resume_a_sink_from_the_console(topo: Topology, browser: webdriver.Chrome) -> None:
    browser.get(topo.url + "/actions/pause?sink=audit")
    browser.find_element(By.ID, "confirm").click()
    await_page(browser, lambda: "pause accepted" in (text_of(browser, "done-message") or ""), what="pause accepted")
    browser.get(topo.url + "/")
    await_page(browser, lambda: text_of(browser, "health-audit") == "paused", what="audit shown paused")
    await_page(browser, lambda: int(text_of(browser, "lag-audit") or 0) > 0, what="audit lag growing while paused")
    shot(browser, "topology-paused")
    browser.get(topo.url + "/actions/resume?sink=audit")
    browser.find_element(By.ID, "confirm").click()
    await_page(browser, lambda: "resume accepted" in (text_of(browser, "done-message") or ""), what="resume accepted")
    browser.get(topo.url + "/")
    await_page(browser, lambda: text_of(browser, "health-audit") == "ready", what="audit consuming again")


def test_lag_plot_moves_while_a_sink_is_stopped(topo: Topology, browser: webdriver.Chrome) -> None:
    rt, thread = topo.runtimes["file"]
    rt.stop()
    thread.join(30)
    browser.get(topo.url + "/lag")

    def last_lag() -> int:
        line = browser.find_element(By.CSS_SELECTOR, "#lag-total polyline[data-series='file']")
        return int(float(line.get_attribute("data-last") or 0))

    first = await_page(browser, lambda: last_lag() + 1, what="the file lag series") - 1
    # The trickle keeps producing; the stopped sink's lag line climbs on the same page.
    await_page(browser, lambda: last_lag() >= first + 5, timeout=30, what="the lag plot to climb")
    shot(browser, "lag-stopped-sink")


def test_a_stopped_broker_is_a_message_over_the_last_data(
    topo: Topology, browser: webdriver.Chrome, local_broker: LocalBroker
) -> None:
    """The broker process stopped (SIGSTOP: it answers nothing, the hardest case for a client, as
    every call runs into its timeout) — and resumed with SIGCONT, without a restart's cost."""
    browser.get(topo.url + "/")
    await_page(browser, lambda: text_of(browser, "topic-partitions") == "3", what="the topology")
    pid = local_broker.info.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await_page(
            browser,
            lambda: "The bus cannot be read" in (text_of(browser, "broker-error") or ""),
            what="the stopped broker on the open page",
        )
        assert text_of(browser, "topic-partitions") == "3"  # the last data read is still shown
        for path in ("/", "/lag", "/dead-letters", "/gate", "/events?agent=x", "/audit"):
            started = time.monotonic()
            code, body = http_get(topo.url + path, timeout=10)
            assert code == 200, (path, body[:300])
            assert "The bus cannot be read" in body, path
            assert "Traceback" not in body, path
            assert time.monotonic() - started < 3, f"{path} waited on the broker"
        shot(browser, "broker-stopped")
    finally:
        os.kill(pid, signal.SIGCONT)
    await_page(browser, lambda: text_of(browser, "broker-error") is None, timeout=60, what="the banner gone")


def test_console_requires_auth_off_loopback_and_survives_a_stopped_broker() -> None:
    # Settings: a non-loopback host without credentials fails at start-up, naming the variable.
    from govbus.errors import ConfigError

    with pytest.raises(ConfigError, match="GOVBUS_CONSOLE__HOST"):
        load_settings(console={"host": "0.0.0.0"})
    # No broker at all: pages answer at once with the reason, never a trace or a hang.
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, topic="nobroker")
    token = "s3cret-token"
    console = ConsoleSettings(port=0, refresh_s=0.5, timeout_s=0.5, token=token)  # type: ignore[arg-type]
    with ConsoleServer(settings, console) as server:
        assert server.collector.wait_refreshes(1, 30)
        code, _ = http_get(server.url + "/")
        assert code == 401
        started = time.monotonic()
        import http.cookiejar
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(server.url + "/?token=" + token, timeout=10) as resp:  # redirected, with a session cookie
            code, body, final = resp.status, resp.read().decode(), resp.url
        assert code == 200, body[:300]
        assert "token" not in final
        assert time.monotonic() - started < 5
        assert "The bus cannot be read" in body
        assert "Traceback" not in body
        assert token not in body
