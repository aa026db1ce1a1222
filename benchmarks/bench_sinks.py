"""Throughput of each shipped sink's ``write()`` against its local receiver (no broker).

Every sink is driven through the sink SPI exactly as the runtime drives it: ``open``, then
``write`` of 500-event batches (the runtime's default batch size), ``flush``, ``close``. Receivers
run in their own processes (OTLP/HTTP: Python ``http.server`` from tests/_sink_receivers.py, the
OTLP one decoding every protobuf request; syslog: Debian's rsyslogd writing a file), so their
cost is not charged to the sink's thread — but they share the machine's cores. Events are signed
sample events (~1.3 KB of headers and value each). Each figure is the best of 3 runs.
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
from opentelemetry.metrics import get_meter

from govbus.consumers._spi import Batch, DeliveredRecord, Ok, SinkContext

BATCH = 500
BATCHES = 10
REPEATS = 3
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


def run(ctx: object) -> list[Row]:
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
