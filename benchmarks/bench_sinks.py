"""Throughput of each shipped sink: its ``write()`` alone, and through the sink runtime from Kafka.

``<sink> sink throughput`` rows: the sink driven through the sink SPI exactly as the runtime
drives it (``open``, then ``write`` of 500-event batches, the runtime's default batch size,
``flush``, ``close``), no broker. Receivers run in their own processes (OTLP/HTTP: Python
``http.server`` from tests/_sink_receivers.py, the OTLP one decoding every protobuf request;
syslog: Debian's rsyslogd writing a file), so their cost is not charged to the sink's thread —
but they share the machine's cores. Events are signed sample events (~1.3 KB of headers and
value each). Each figure is the best of 3 runs.

``<sink> sink through the runtime`` rows: one ``SinkRuntime`` (consume loop + worker thread, as
``govbus sink run`` runs it) per shipped sink, each in its own consumer group, reading the same
pre-filled topic on the real broker (signed events, signatures verified with the keyring), from
its first acknowledged batch to the last event; the same receivers. Baseline: the null sink
through the same runtime in the same run, i.e. the runtime's own ceiling; a sink near it is
limited by the runtime (intake: decode + verify), not by itself or its receiver.
GOVBUS_BENCH_SINK_RUNTIME_EVENTS sets the topic's size (default 30000).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _harness import Row, machine
from _sink_receivers import Rsyslog, signed_batch
from bench_consumer import PARTITIONS, _produce_signed, _run_runtime, _Timed, _topic, _wait
from opentelemetry.metrics import get_meter

from govbus.consumers._spi import Batch, DeliveredRecord, Ok, SinkContext

BATCH = 500
BATCHES = 10
REPEATS = 3
RUNTIME_EVENTS = int(os.environ.get("GOVBUS_BENCH_SINK_RUNTIME_EVENTS", "30000"))
TARGET = 30_000  # events/s every shipped sink should carry through the runtime (issue 14)
CTX = SinkContext("bench", "govbus.sink.bench", "govbus.events", get_meter("bench"), logging.getLogger("bench"))
_RECEIVER = """
import sys, threading
sys.path.insert(0, {tests!r})
from _sink_receivers import {cls}
r = {cls}()
print(r.port, flush=True)
threading.Event().wait()
"""


def _receiver(cls: str) -> tuple[subprocess.Popen[str], int]:
    code = _RECEIVER.format(tests=str(Path(__file__).parent.parent / "tests"), cls=cls)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _measure(make: Callable[[], Any], batches: list[Batch]) -> float:
    """Events per second of write() over ``batches`` (after one warm-up batch), best of REPEATS."""
    best = 0.0
    for _ in range(REPEATS):
        sink = make()
        sink.open(CTX)
        try:
            assert isinstance(sink.write(batches[0]), Ok | type(None))
            started = time.perf_counter()
            for b in batches:
                result = sink.write(b)
                if result is not None and not isinstance(result, Ok):
                    raise RuntimeError(f"{type(sink).__name__} answered {result!r}")
            sink.flush(30.0)
            elapsed = time.perf_counter() - started
        finally:
            sink.close()
        best = max(best, len(batches) * BATCH / elapsed)
    return best


def run(ctx: Any) -> list[Row]:
    rows = _write_rows()
    rows += _runtime_rows(ctx.bootstrap())
    return rows


def _write_rows() -> list[Row]:
    from govbus.consumers.sinks._audit import AuditSink
    from govbus.consumers.sinks._file import FileSink
    from govbus.consumers.sinks._http import HttpSink
    from govbus.consumers.sinks._otlp import OtlpSink
    from govbus.consumers.sinks._stdout import StdoutSink
    from govbus.consumers.sinks._syslog import SyslogSink

    records, _ = signed_batch(BATCH * BATCHES)
    batches = [Batch(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]
    size = sum(len(r.value) + sum(len(v or b"") + len(k) for k, v in r.headers) for r in records) // len(records)
    base = f"{BATCH}/batch, {len(records)} signed events (~{size} B each), best of {REPEATS}; {machine()}"
    rows: list[Row] = []

    with open(os.devnull, "wb") as devnull:
        rows.append(Row("stdout sink throughput", _measure(lambda: StdoutSink(devnull), batches), "ev/s",
                        conditions=f"to /dev/null; {base}"))  # fmt: skip

    proc, port = _receiver("OtlpReceiver")
    try:
        endpoint = f"http://127.0.0.1:{port}/v1/logs"
        rows.append(Row("otlp sink throughput", _measure(lambda: OtlpSink(endpoint=endpoint), batches), "ev/s",
                        conditions=f"OTLP/HTTP protobuf, receiver decodes each request (http.server, own process); {base}"))  # fmt: skip
    finally:
        proc.kill()
        proc.wait()

    proc, port = _receiver("HttpReceiver")
    try:
        url = f"http://127.0.0.1:{port}/events"
        rows.append(Row("http sink throughput", _measure(lambda: HttpSink(url=url, token="t"), batches), "ev/s",
                        conditions=f"CloudEvents JSON batch POST, keep-alive, http.server (own process); {base}"))  # fmt: skip
        rows.append(Row("http sink throughput (HEC, HMAC, gzip)",
                        _measure(lambda: HttpSink(url=url, token="t", format="splunk-hec", hmac_secret="k", gzip="true"), batches),
                        "ev/s", conditions=f"Splunk HEC shape, HMAC-SHA256 header, gzip; same receiver; {base}"))  # fmt: skip
    finally:
        proc.kill()
        proc.wait()

    with tempfile.TemporaryDirectory(prefix="govbus-bench-") as tmp:
        try:
            server: Rsyslog | None = Rsyslog(Path(tmp) / "rsyslog")
        except FileNotFoundError:
            server = None
        if server is not None:
            try:
                rows.append(Row("syslog sink throughput", _measure(lambda: SyslogSink(port=str(server.port)), batches),
                                "ev/s", conditions=f"RFC 5424 over TCP, octet counting, rsyslogd imtcp -> omfile; {base}"))  # fmt: skip
            finally:
                server.stop()

        counter = iter(range(1_000_000))

        def audit() -> AuditSink:
            return AuditSink(path=str(Path(tmp) / f"ledger-{next(counter)}.jsonl"), checkpoint_every="1000")

        def file() -> FileSink:
            return FileSink(str(Path(tmp) / f"file-{next(counter)}.jsonl"), fsync="batch")

        file_rate = _measure(file, batches)
        rows.append(Row("audit sink throughput", _measure(audit, batches), "ev/s", baseline=file_rate,
                        conditions=f"hash chain + fsync per batch, tmp dir ({_fs(tmp)}); baseline: file sink, "
                        f"fsync=batch; {base}"))  # fmt: skip
    return rows


def _runtime_rows(bootstrap: str) -> list[Row]:
    """Each shipped sink in a SinkRuntime reading one pre-filled topic; see the module docstring."""
    from govbus.consumers.sinks._audit import AuditSink
    from govbus.consumers.sinks._file import FileSink
    from govbus.consumers.sinks._http import HttpSink
    from govbus.consumers.sinks._null import NullSink
    from govbus.consumers.sinks._otlp import OtlpSink
    from govbus.consumers.sinks._stdout import StdoutSink
    from govbus.consumers.sinks._syslog import SyslogSink
    from govbus.signing import KeyEntry, Keyring, Signer, SigningKey

    rows: list[Row] = []
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="govbus-bench-sinks-") as d, open(os.devnull, "wb") as devnull:
        tmp = Path(d)
        key = SigningKey.generate("bench-sinks-k1")
        keyring = tmp / "keyring.json"
        Keyring([KeyEntry(key.kid, key.public_bytes)]).save(keyring)
        topic = _topic(bootstrap, "sinks")
        _produce_signed(bootstrap, topic, RUNTIME_EVENTS, Signer(key))
        syslog: Rsyslog | None = None
        try:
            otlp_proc, otlp_port = _receiver("OtlpReceiver")
            http_proc, http_port = _receiver("HttpReceiver")
            procs += [otlp_proc, http_proc]
            try:
                syslog = Rsyslog(tmp / "rsyslog")
            except FileNotFoundError:
                syslog = None
            sinks: list[tuple[str, Callable[[], Any], str]] = [
                ("null", NullSink, "discards"),
                ("stdout", lambda: StdoutSink(devnull), "to /dev/null"),
                ("file", lambda: FileSink(str(tmp / "file.jsonl")), f"fsync at commit, dedup on, {_fs(d)}"),
                ("http", lambda: HttpSink(url=f"http://127.0.0.1:{http_port}/events", token="t"),
                 "CloudEvents JSON batch POST to http.server (own process)"),
                ("otlp", lambda: OtlpSink(endpoint=f"http://127.0.0.1:{otlp_port}/v1/logs"),
                 "OTLP/HTTP protobuf to http.server decoding each request (own process)"),
                ("audit", lambda: AuditSink(path=str(tmp / "ledger.jsonl")),
                 f"hash chain + fsync per batch, {_fs(d)}"),
            ]  # fmt: skip
            if syslog is not None:
                port = str(syslog.port)
                sinks.append(("syslog", lambda: SyslogSink(port=port), "RFC 5424 over TCP to rsyslogd imtcp -> omfile"))
            # The null sink runs first and last: the first run warms the process up, and the
            # better of the two is the ceiling the other sinks are compared with.
            rates = {name: _through_runtime(bootstrap, topic, make(), name, keyring) for name, make, _ in sinks}
            null_again = _through_runtime(bootstrap, topic, NullSink(), "null-again", keyring)
            ceiling = max(rates["null"], null_again)
            common = (
                f"{RUNTIME_EVENTS} signed events pre-filled, {PARTITIONS} partitions, Ed25519 batch signatures "
                f"verified, 1 SinkRuntime in-process; {machine()}"
            )
            rows.append(Row("null sink through the runtime", ceiling, "ev/s",
                            conditions=f"the runtime's ceiling, better of a run first and last "
                            f"({rates['null']:.0f} / {null_again:.0f}); {common}"))  # fmt: skip
            for name, _, receiver in sinks[1:]:
                rows.append(Row(f"{name} sink through the runtime", rates[name], "ev/s", ceiling,
                                f"{receiver}; baseline: null sink through the same runtime, same run; {common}"))  # fmt: skip
        finally:
            if syslog is not None:
                syslog.stop()
            for proc in procs:
                proc.kill()
                proc.wait()
    return rows


def _through_runtime(bootstrap: str, topic: str, sink: Any, name: str, keyring: Path) -> float:
    timed = _Timed(sink)
    runtime, thread = _run_runtime(bootstrap, topic, timed, f"sinks-{name}", verify={"keyring": str(keyring)})
    try:
        _wait(lambda: timed.records >= RUNTIME_EVENTS, 600, f"the {name} sink to take every event")
    finally:
        runtime.stop()
        thread.join(60)
    assert timed.first is not None
    return (timed.records - timed.first_batch) / max(1e-9, timed.last - timed.first)


def _fs(path: str) -> str:
    try:
        out = subprocess.run(["df", "--output=fstype", path], capture_output=True, text=True, timeout=10).stdout
        return out.split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def _silence() -> None:
    for name in ("govbus", "opentelemetry"):
        logging.getLogger(name).setLevel(logging.ERROR)


_silence()
_ = DeliveredRecord  # the records handed to write() are these
