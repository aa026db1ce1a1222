"""``govbus demo``: the whole bus on this machine, as the compose topology runs it, with local processes.

A local Apache Kafka broker; signing keys; one process per sink (stdout, file, audit ledger,
OTLP into a local receiver), each its own consumer group verifying signatures; a demo kernel
emitting a realistic mix through the policy gate; a live view while it runs; a final report
(per-sink counts, dead letters, ``govbus audit verify``). Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from govbus._admin import dlq_topic, ensure_topic
from govbus.errors import GovbusError

SINKS = ("stdout", "file", "audit", "otlp")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole bus locally (broker, sinks, kernel, gate) and print a report")
    p.add_argument("--events", type=int, default=600, help="events the demo kernel emits (default 600)")
    p.add_argument("--rate", type=float, default=400.0, help="events per second (default 400)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="where sinks write (default ./demo-out)")
    p.add_argument("--bootstrap", help="use this cluster instead of starting a local broker")
    p.add_argument(
        "--secure",
        action="store_true",
        help="a secure local broker (SASL_SSL, ACLs): every process its own principal with its role's ACLs",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every sink to catch up")
    p.add_argument(
        "--keep-running", action="store_true", help="after the report, keep the broker and the console up until Ctrl-C"
    )
    p.set_defaults(func=_run)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # the live view and the report say what matters
    from govbus._sample import KINDS

    if args.events < len(KINDS):
        raise GovbusError(f"--events must be at least {len(KINDS)} so every event kind is emitted")
    with contextlib.ExitStack() as stack:
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        stack.callback(signal.signal, signal.SIGINT, previous)
        demo = _Demo(args, interrupted, stack)
        code: int = demo.run()
    return code


class _Demo:
    def __init__(self, args: argparse.Namespace, interrupted: threading.Event, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.interrupted = interrupted
        self.stack = stack
        self.out: Path = args.out.resolve()
        self.topic = f"govbus.demo.{int(time.time())}"
        self.sinks: dict[str, subprocess.Popen[bytes]] = {}
        self.health_ports = {name: _free_port() for name in SINKS}  # the console scrapes them
        self.secure: Any = None  # a govbus._demo_secure.SecureDemo with --secure

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        shutil.rmtree(self.out, ignore_errors=True)
        (self.out / "logs").mkdir(parents=True)
        if getattr(self.args, "secure", False):
            from govbus import _demo_secure

            if self.args.bootstrap:
                raise GovbusError("--secure starts its own secure broker: drop --bootstrap")
            self.secure = _demo_secure.start(self.stack, _say)
            bootstrap, conf = self.secure.bootstrap, dict(self.secure.admin)
        else:
            bootstrap = self.args.bootstrap or self._start_broker()
            conf = {"bootstrap.servers": bootstrap}
        ensure_topic(conf, self.topic, partitions=self.args.partitions)
        if self.secure is not None:
            _demo_secure.provision(self.secure, self.topic, SINKS, _say)
        _say(f"• topic {self.topic} ({self.args.partitions} partitions)")
        keys = self._make_keys()
        receiver = self._start_receiver()
        for name in SINKS:
            self._start_sink(name, bootstrap, keys, receiver.endpoint)
        _say(f"• sinks {', '.join(SINKS)}: one process and one consumer group each (govbus.sink.<name>)")
        return self._kernel_and_report(bootstrap, conf, keys, receiver)

    def _kernel_and_report(self, bootstrap: str, conf: dict[str, Any], keys: dict[str, Path], receiver: Any) -> int:
        from govbus._kernel import producer_status, run_kernel
        from govbus._settings import load_settings
        from govbus.gate import BusProbe, Gate, parse_policy
        from govbus.gate._cli import signing_status
        from govbus.producer import Bus

        settings = load_settings(
            kafka=self.secure.kafka("kernel") if self.secure is not None else {"bootstrap_servers": bootstrap},
            topic=self.topic,
            producer={"name": "demo-kernel", "spool_dir": str(self.out / "spool")},
            signing={"private_key_path": str(keys["key"]), "keyring_path": str(keys["keyring"])},
        )
        policy = parse_policy(
            {
                "refresh_interval_s": 0.5,
                "checks": {
                    "topic": {"min_partitions": self.args.partitions},
                    "sinks": [{"name": name} for name in SINKS],
                    "signing": {"enabled": True},
                },
            }
        )
        decisions: list[str] = []
        bus = self.stack.enter_context(Bus(settings))  # signs: GOVBUS_SIGNING__PRIVATE_KEY_PATH is set

        def record(event: Any) -> None:
            decisions.append(event.event_id)
            bus.emit(event)

        probe = BusProbe(
            settings.kafka.librdkafka(),
            self.topic,
            producer=producer_status(bus, policy),
            signing=lambda: signing_status(settings),
        )
        gate = self.stack.enter_context(Gate(policy, probe.run, recorder=record))
        self._await_gate(gate)
        console_url = self._start_console(settings, policy, keys)

        stop = self.interrupted
        view = _LiveView(self, gate, bus, conf)
        self.stack.callback(view.stop)
        view.start()
        _say(f"• demo kernel: {self.args.events} events at ~{self.args.rate:g}/s through the gate")
        stats = run_kernel(bus, gate, count=self.args.events, rate=self.args.rate, stop=stop, keep_ids=True)
        gate.close()  # records the last decisions
        bus.flush(30)
        expected = set(stats.emitted_ids) | set(decisions)
        view.expected = len(expected)
        caught_up = self._await_sinks(expected, receiver)
        view.stop()
        self._stop_sinks()
        counters = bus.counters()
        _say("")
        _say("govbus demo — report")
        _say(
            f"  kernel: {stats.emitted} events emitted, {stats.admissions} sessions admitted, {stats.denials} denials; "
            f"{len(decisions)} gate decisions recorded as events"
        )
        _say(
            f"  producer: {counters.submitted} submitted, {counters.delivered} acknowledged (acks=all), "
            f"{counters.spooled} spooled, {counters.failed} failed"
        )
        ok = not self.interrupted.is_set()
        _say(f"  {'sink':<8}{'received':>10}{'expected':>10}{'duplicates':>12}{'dead letters':>14}")
        for name in SINKS:
            ids = self._delivered_ids(name, receiver)
            got = len(set(ids) & expected)
            dead = _topic_size(conf, dlq_topic(self.topic, name))
            ok &= got == len(expected) and dead == 0
            _say(f"  {name:<8}{got:>10}{len(expected):>10}{len(ids) - len(set(ids)):>12}{dead:>14}")
        verify = self._audit_verify(keys)
        ok &= verify[0]
        _say(f"  audit verify: {verify[1]}")
        _say(f"  outputs: {self.out} (stdout.jsonl, events.jsonl, audit.ledger, logs/)")
        if not caught_up:
            _say("  sinks did not catch up in time: see the logs in " + str(self.out / "logs"))
        _say(
            "  result: " + ("every sink received every event, nothing dead-lettered, ledger intact" if ok else "FAILED")
        )
        _say(f"  console: {console_url}")
        if self.args.keep_running and not self.interrupted.is_set():
            _say("  the broker and the console stay up (sinks stopped); Ctrl-C ends the demo")
            self.interrupted.wait()
        return 0 if ok else 1

    # -- pieces ------------------------------------------------------------------------------

    def _start_broker(self) -> str:
        from govbus.localkafka import LocalBroker

        _say("• starting a local Apache Kafka broker (the first run downloads it from Maven Central)…")
        broker = LocalBroker.ephemeral()
        self.stack.callback(_say, "• broker stopped")
        self.stack.callback(broker.close)
        info = broker.start()
        _say(
            f"  Apache Kafka {info.version} at {info.bootstrap}, up in {info.startup_seconds:.1f} s; log {info.log_path}"
        )
        return info.bootstrap

    def _start_console(self, settings: Any, policy: Any, keys: dict[str, Path]) -> str:
        from govbus.console._server import ConsoleServer

        policy_file = self.out / "gate-policy.json"
        policy_file.write_text(policy.model_dump_json(), encoding="utf-8")
        if self.secure is not None:  # its own principal: the kernel's may not read the topic
            from govbus._settings import KafkaSettings

            settings = settings.model_copy(update={"kafka": KafkaSettings.model_validate(self.secure.kafka("console"))})
        console = settings.console.model_copy(
            update={
                "sink_health_urls": {n: f"http://127.0.0.1:{p}" for n, p in self.health_ports.items()},
                "audit_ledger": self.out / "audit.ledger",
                "audit_keyring": keys["keyring"],
                "gate_policy": policy_file,
                "refresh_s": 1.0,
            }
        )
        try:
            server = ConsoleServer(settings, console)
        except GovbusError:  # the configured port is taken: any free one will do for a demo
            server = ConsoleServer(settings, console.model_copy(update={"port": 0}))
        server.start()
        self.stack.callback(server.close)
        _say(f"• console at {server.url} (topology, lag, dead letters, gate, signatures, events, audit)")
        return server.url

    def _make_keys(self) -> dict[str, Path]:
        from govbus.signing import KeyEntry, Keyring, SigningKey, write_private_key

        keydir = self.out / "keys"
        keydir.mkdir(mode=0o700)
        producer_key, ledger_key = SigningKey.generate(), SigningKey.generate()
        ring = Keyring()
        ring.add(KeyEntry(producer_key.kid, producer_key.public_bytes))
        ring.add(KeyEntry(ledger_key.kid, ledger_key.public_bytes))
        ring.save(keydir / "keyring.json")
        keys = {
            "key": write_private_key(producer_key, keydir / f"{producer_key.kid}.pem"),
            "ledger_key": write_private_key(ledger_key, keydir / f"{ledger_key.kid}.pem"),
            "keyring": keydir / "keyring.json",
        }
        _say(f"• Ed25519 keys: producer kid {producer_key.kid}, ledger checkpoints kid {ledger_key.kid} (files 0600)")
        return keys

    def _start_receiver(self) -> Any:
        from govbus._otlp_receiver import OtlpLogsReceiver

        receiver = OtlpLogsReceiver().start()
        self.stack.callback(receiver.close)
        _say(f"• OTLP/HTTP logs receiver at {receiver.endpoint}")
        return receiver

    def _start_sink(self, name: str, bootstrap: str, keys: dict[str, Path], otlp_endpoint: str) -> None:
        env = {
            **os.environ,
            "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "GOVBUS_TOPIC": self.topic,
            "GOVBUS_SINK__VERIFY__MODE": "required",
            "GOVBUS_SINK__VERIFY__KEYRING": str(keys["keyring"]),
            "GOVBUS_SINK__HEALTH__PORT": str(self.health_ports[name]),
            "GOVBUS_SINK__COMMIT_INTERVAL_MS": "200",
        }
        if self.secure is not None:
            env.update({**self.secure.env(f"sink-{name}"), "GOVBUS_SINK__DLQ__CREATE_TOPICS": "false"})
        options = {
            "file": {"PATH": str(self.out / "events.jsonl")},
            "audit": {
                "PATH": str(self.out / "audit.ledger"),
                "CHECKPOINT_KEY": str(keys["ledger_key"]),
                "CHECKPOINT_EVERY": "100",
            },
            "otlp": {"ENDPOINT": otlp_endpoint, "SERVICE_NAME": "govbus-demo"},
        }.get(name, {})
        env.update({f"GOVBUS_SINK__OPTIONS__{k}": v for k, v in options.items()})
        stdout = open(self.out / ("stdout.jsonl" if name == "stdout" else f"logs/{name}.out"), "wb")  # noqa: SIM115
        log = open(self.out / f"logs/{name}.log", "wb")  # noqa: SIM115
        self.stack.callback(stdout.close)
        self.stack.callback(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "govbus", "sink", "run", name],
            env=env,
            stdout=stdout,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the sinks in order
        )
        self.sinks[name] = proc
        self.stack.callback(self._kill_sink, proc)

    def _await_gate(self, gate: Any) -> None:
        deadline = time.monotonic() + 90
        while not gate.admit("demo-readiness").allowed:
            self._check_sinks_alive()
            if self.interrupted.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise GovbusError("the gate did not open within 90 s: " + "; ".join(gate.admit("x").reasons))
            time.sleep(0.2)
        _say("• gate open: broker, topic, producer, signing key and all four sink groups are healthy")

    def _check_sinks_alive(self) -> None:
        for name, proc in self.sinks.items():
            if proc.poll() is not None:
                tail = (self.out / f"logs/{name}.log").read_text(errors="replace")[-2000:]
                raise GovbusError(f"sink {name} exited with {proc.returncode}:\n{tail}")

    def _await_sinks(self, expected: set[str], receiver: Any) -> bool:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline and not self.interrupted.is_set():
            self._check_sinks_alive()
            if all(expected <= set(self._delivered_ids(name, receiver)) for name in SINKS):
                return True
            time.sleep(0.25)
        return False

    def _delivered_ids(self, name: str, receiver: Any) -> list[str]:
        if name == "otlp":
            return list(receiver.event_ids)
        path = {"stdout": "stdout.jsonl", "file": "events.jsonl", "audit": "audit.ledger"}[name]
        ids: list[str] = []
        for line in _lines(self.out / path):
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            event = obj.get("event") if name == "audit" else obj
            if isinstance(event, dict) and isinstance(event.get("id"), str):
                ids.append(event["id"])
        return ids

    def _stop_sinks(self) -> None:
        for proc in self.sinks.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.sinks.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)

    @staticmethod
    def _kill_sink(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _audit_verify(self, keys: dict[str, Path]) -> tuple[bool, str]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "govbus",
                "audit",
                "verify",
                str(self.out / "audit.ledger"),
                "--keyring",
                str(keys["keyring"]),
                "--checkpoint-keyring",
                str(keys["keyring"]),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip() and not ln.strip().startswith("head ")]
        return out.returncode == 0, ("; ".join(lines) if lines else out.stderr.strip()[-300:])


class _LiveView:
    """Once a second: events/s, lag per sink, gate state."""

    def __init__(self, demo: _Demo, gate: Any, bus: Any, conf: dict[str, Any]) -> None:
        self.demo, self.gate, self.bus, self.conf = demo, gate, bus, conf
        self.expected: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-view", daemon=True)
        self._started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _loop(self) -> None:
        from govbus.consumers._lag import sink_lag

        last, last_t = 0, time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            delivered = self.bus.counters().delivered
            rate = (delivered - last) / (now - last_t)
            last, last_t = delivered, now
            try:
                groups = sink_lag(self.conf, groups=[f"govbus.sink.{s}" for s in SINKS], timeout=2)
                lag = " · ".join(
                    f"{g.group.removeprefix('govbus.sink.')} {sum(p.lag for p in g.partitions if p.topic == self.demo.topic)}"
                    for g in groups
                )
            except Exception as exc:
                lag = f"unavailable ({type(exc).__name__})"
            snap = self.gate.snapshot
            state = "open" if snap is not None and snap.healthy else "closed"
            _say(f"  {now - self._started:5.1f}s  acked {delivered:>6} ({rate:6.0f} ev/s) | gate {state} | lag {lag}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        yield from fh


def _topic_size(conf: dict[str, Any], topic: str) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    from govbus._librdkafka import new_admin

    admin = new_admin(conf)
    md = admin.list_topics(topic=topic, timeout=10)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        return 0
    parts = [TopicPartition(topic, p) for p in meta.partitions]
    ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in parts}, request_timeout=10)  # type: ignore[no-untyped-call]
    starts = admin.list_offsets({tp: OffsetSpec.earliest() for tp in parts}, request_timeout=10)  # type: ignore[no-untyped-call]
    return sum(ends[tp].result().offset - starts[tp].result().offset for tp in ends)
