"""LocalBroker's failure paths with a stand-in ``java`` (no JVM, no broker): each says what went wrong."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from govbus.errors import BrokerError
from govbus.localkafka import LocalBroker
from govbus.localkafka._broker import running_pid
from govbus.localkafka._fetch import ensure_kafka

FAKE_JAVA = f"""#!{sys.executable}
import os, pathlib, signal, sys
args, mode = sys.argv[1:], os.environ.get("FAKE_JAVA_MODE", "")
if "-version" in args:
    sys.stderr.write('openjdk version "17.0.99" 2099-01-01\\n')
elif "kafka.tools.StorageTool" in args:
    if mode == "format-fails":
        print("Exception in thread main: bad cluster id ---")
        sys.exit(1)
    config = pathlib.Path(args[args.index("-c") + 1]).read_text().splitlines()
    storage = pathlib.Path(next(line for line in config if line.startswith("log.dirs=")).split("=", 1)[1])
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "meta.properties").write_text("node.id=1\\n")
elif "kafka.Kafka" in args:
    if mode == "crash":
        sys.stderr.write("Error: Could not reserve enough space for object heap\\n")
        sys.exit(3)
    signal.pause()  # "hang": alive, but never answers, until stopped
"""


@pytest.fixture
def fake_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding stand-in jars, and a stand-in java first on PATH. Returns the cache directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text(FAKE_JAVA)
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("FAKE_JAVA_MODE", raising=False)
    # Seed the cache the way a real fetch would, with an mvn that only writes two empty jars.
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\nfor a; do case $a in -DoutputDirectory=*) o=${a#*=};; esac; done\n"
        'mkdir -p "$o" && : > "$o/kafka_2.13-4.4.0.jar" && : > "$o/kafka-clients-4.4.0.jar"\n'
    )
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    ensure_kafka("4.4.0", cache=tmp_path / "cache", progress=None)
    return tmp_path / "cache"


def _broker(tmp_path: Path, cache: Path, **kwargs: object) -> LocalBroker:
    return LocalBroker(tmp_path / "data", cache_dir=cache, quiet=True, **kwargs)  # type: ignore[arg-type]


def test_a_broker_that_exits_at_once_reports_its_code_and_output(
    fake_kafka: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JAVA_MODE", "crash")
    broker = _broker(tmp_path, fake_kafka)
    with pytest.raises(BrokerError) as caught:
        broker.start()
    message = str(caught.value)
    assert "Apache Kafka exited with code 3 while starting" in message
    assert "Could not reserve enough space for object heap" in message  # the tail of logs/stdout.log
    assert not broker.is_running()
    # What a later start needs stays in place: configuration, formatted storage, logs.
    assert (tmp_path / "data" / "server.properties").exists()
    assert (tmp_path / "data" / "kraft" / "meta.properties").exists()
    assert (tmp_path / "data" / "log4j2.xml").exists()


def test_a_broker_that_never_answers_is_killed_after_the_timeout(
    fake_kafka: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JAVA_MODE", "hang")
    broker = _broker(tmp_path, fake_kafka, startup_timeout=1.0)
    with pytest.raises(
        BrokerError, match=r"did not answer a metadata request on 127\.0\.0\.1:\d+ within 1 s"
    ) as caught:
        broker.start()
    pid = int(re.search(r"pid (\d+)", str(caught.value)).group(1))  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert running_pid(tmp_path / "data") is None  # and its lock on the data directory went with it


def test_a_failed_format_shows_the_storage_tool_output(
    fake_kafka: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JAVA_MODE", "format-fails")
    with pytest.raises(BrokerError, match=r"formatting KRaft storage in .* failed \(exit code 1\)") as caught:
        _broker(tmp_path, fake_kafka).start()
    assert "kafka.tools.StorageTool format -t" in str(caught.value)
    assert "bad cluster id ---" in str(caught.value)


def test_storage_is_formatted_once(fake_kafka: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JAVA_MODE", "crash")
    broker = _broker(tmp_path, fake_kafka)
    with pytest.raises(BrokerError):
        broker.start()
    meta = tmp_path / "data" / "kraft" / "meta.properties"
    meta.write_text("node.id=1\ncluster.id=keep-me\n")
    with pytest.raises(BrokerError):
        broker.start()
    assert "keep-me" in meta.read_text()


def test_a_busy_requested_port_is_named(fake_kafka: Path, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 \\(requested explicitly\\) is already in use"):
            _broker(tmp_path, fake_kafka, port=port).start()


def test_ports_are_kept_in_the_data_directory(
    fake_kafka: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JAVA_MODE", "crash")
    first = _broker(tmp_path, fake_kafka)
    with pytest.raises(BrokerError):
        first.start()
    config = (tmp_path / "data" / "server.properties").read_text()
    second = _broker(tmp_path, fake_kafka)
    with pytest.raises(BrokerError):
        second.start()
    assert (tmp_path / "data" / "server.properties").read_text() == config


def test_a_data_directory_in_use_is_refused(fake_kafka: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / "govbus.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        assert running_pid(data) == 4242
        with pytest.raises(BrokerError, match=r"in use by another running broker \(pid 4242\)"):
            _broker(tmp_path, fake_kafka).start()
    finally:
        os.close(fd)
    assert running_pid(data) is None


def test_no_java_is_reported_before_anything_is_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="not on PATH"):
        LocalBroker(tmp_path / "data", cache_dir=tmp_path / "cache", quiet=True).start()
    assert not (tmp_path / "cache").exists()


def test_ephemeral_directories_are_removed_on_close_and_orphans_swept() -> None:
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    orphan = Path(tempfile.mkdtemp(prefix="govbus-kafka-"))
    (orphan / "owner.pid").write_text(f"{dead.pid}\n")
    alive = Path(tempfile.mkdtemp(prefix="govbus-kafka-"))
    (alive / "owner.pid").write_text(f"{os.getpid()}\n")
    try:
        broker = LocalBroker.ephemeral(quiet=True)
        assert not orphan.exists()  # its owner died without cleaning up
        assert alive.exists()  # its owner (this process) is alive: not ours to delete
        assert broker.data_dir.is_dir()
        assert (broker.data_dir / "owner.pid").read_text().strip() == str(os.getpid())
        broker.stop()
        assert broker.data_dir.is_dir()  # stop keeps the data for a restart …
        broker.close()
        assert not broker.data_dir.exists()  # … close removes it
    finally:
        for path in (orphan, alive):
            if path.exists():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
