"""One Apache Kafka broker (KRaft, combined broker+controller) as a child process on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from govbus.errors import BrokerError

from ._config import (
    HOST,
    JVM_OPTIONS,
    TOOL_JVM_OPTIONS,
    free_port,
    log4j2_xml,
    new_cluster_id,
    port_is_free,
    server_properties,
)
from ._fetch import KAFKA_VERSION, ensure_kafka
from ._java import find_java
from ._probe import MetadataProbe
from ._secure import SecureInfo, SecureSetup, prepare

_log = logging.getLogger("govbus.localkafka")

_LOCK = "govbus.lock"  # held (flock) by the running java process itself; holds its pid
_STATE = "broker.json"  # ports and cluster id, so a later start on the same data keeps them
_OWNER = "owner.pid"  # the process whose ephemeral() made this directory
_EPHEMERAL_PREFIX = "govbus-kafka-"
_KAFKA_VERSION_LINE = re.compile(r"Kafka version: (\S+)")
_TAIL_LINES = 40


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker. ``startup_seconds`` is the wall time of ``start()``, fetch included."""

    bootstrap: str
    version: str
    log_path: Path
    pid: int
    data_dir: Path
    startup_seconds: float
    secure: SecureInfo | None = None  # set for a ``secure=True`` broker: listeners, CA, admin identity


class LocalBroker:
    """A single-node Apache Kafka broker from the Maven Central artifacts, run with the local Java 17+.

    ``data_dir`` holds its configuration, KRaft storage and ``logs/server.log``; stopping and
    starting again (even from another ``LocalBroker`` on the same directory) keeps topics, records
    and ports. ``port``/``controller_port`` default to free ports on 127.0.0.1. ``broker_config``
    overrides server.properties entries. A broker started from the main thread of a process dies
    with that process (Linux), unless ``detached`` — then it outlives it (``govbus dev broker up``).
    ``secure``: no plaintext listener; SASL_SSL (SCRAM-SHA-512) on ``port``, mTLS on another port,
    ACLs enforced (see ``_secure``); ``info.secure`` says how to reach it as a super user.

    Use as a context manager, or ``start()`` … ``stop()``/``close()``::

        with LocalBroker.ephemeral() as broker:
            produce_to(broker.info.bootstrap)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        controller_port: int | None = None,
        *,
        version: str = KAFKA_VERSION,
        cache_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        broker_config: Mapping[str, str] | None = None,
        detached: bool = False,
        quiet: bool = False,
        secure: bool = False,
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._requested = (port, controller_port)
        self._version = version
        self._cache = None if cache_dir is None else Path(cache_dir)
        self._startup_timeout = startup_timeout
        self._overrides = dict(broker_config or {})
        self._detached = detached
        self._quiet = quiet
        self._ports: tuple[int, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._info: BrokerInfo | None = None
        self._remove_on_close = False
        self._secure = secure
        self._setup: SecureSetup | None = None

    @classmethod
    def ephemeral(
        cls,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        version: str = KAFKA_VERSION,
        startup_timeout: float = 60.0,
        broker_config: Mapping[str, str] | None = None,
        quiet: bool = False,
        secure: bool = False,
    ) -> LocalBroker:
        """A broker in a fresh temporary data directory, deleted by ``close()`` or at interpreter exit.

        ``stop()`` keeps the directory so that a test can restart the broker with its data.
        Directories left by processes that were killed before they could clean up are swept here.
        """
        _sweep_orphans()
        data_dir = Path(tempfile.mkdtemp(prefix=_EPHEMERAL_PREFIX))
        (data_dir / _OWNER).write_text(f"{os.getpid()}\n")
        broker = cls(
            data_dir,
            port,
            controller_port,
            version=version,
            startup_timeout=startup_timeout,
            broker_config=broker_config,
            quiet=quiet,
            secure=secure,
        )
        broker._remove_on_close = True
        _cleanup_at_exit.add(broker)
        return broker

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._data_dir / "logs" / "server.log"

    @property
    def info(self) -> BrokerInfo:
        """What the last successful ``start()`` returned; BrokerError if it was never started."""
        if self._info is None:
            raise BrokerError(f"the broker in {self._data_dir} has not been started")
        return self._info

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> BrokerInfo:
        """Start the broker (fetching Kafka and formatting storage the first time) and wait until it
        answers a metadata request. Returns the running broker's info if it is already running."""
        if self.is_running():
            return self.info
        started = time.monotonic()
        java = find_java()
        libs = ensure_kafka(self._version, cache=self._cache, progress=None if self._quiet else sys.stderr)
        for sub in ("logs", "kraft"):
            (self._data_dir / sub).mkdir(parents=True, exist_ok=True)
        lock = _acquire(self._data_dir)
        try:
            port, controller_port = self._choose_ports()
            if self._secure:
                self._setup = prepare(self._data_dir, sasl_port=port, controller_port=controller_port)
            config = self._write_config(port, controller_port)
            self._format_once(java.path, libs, config)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._launch(java.path, libs, lock)
        finally:
            os.close(lock)  # the broker inherited it and now holds the lock for as long as it lives
        self._proc = proc
        if not self._detached:
            _cleanup_at_exit.add(self)
        bootstrap = f"{HOST}:{port}"
        try:
            self._await_metadata(proc, bootstrap, started)
        except BaseException:
            self._terminate(proc, grace=0.0)
            raise
        version = self._logged_version(log_offset) or _jar_version(libs) or self._version
        self._info = BrokerInfo(
            bootstrap=bootstrap,
            version=version,
            log_path=self.log_path,
            pid=proc.pid,
            data_dir=self._data_dir,
            startup_seconds=time.monotonic() - started,
            secure=self._setup.info if self._setup is not None else None,
        )
        _log.debug(
            "Apache Kafka %s up at %s in %.1f s (pid %d, log %s)",
            version,
            bootstrap,
            self._info.startup_seconds,
            proc.pid,
            self.log_path,
        )
        return self._info

    def stop(self, timeout: float = 20.0) -> None:
        """Stop cleanly (SIGTERM); SIGKILL its process group if it has not exited after ``timeout`` s.

        Data, ports and topics survive for the next ``start()``.
        """
        if self._proc is not None:
            self._terminate(self._proc, grace=timeout)
            self._proc = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL: no shutdown hook, no controlled shutdown), like an OOM kill.

        Unlike a power cut, what the broker wrote to the OS page cache survives.
        """
        if self._proc is not None:
            self._terminate(self._proc, grace=0.0)
            self._proc = None

    def close(self) -> None:
        """Stop the broker and, for an ``ephemeral()`` one, delete its data directory."""
        try:
            self.stop()
        finally:
            _cleanup_at_exit.discard(self)
            if self._remove_on_close:
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ will not run: do not leave an ephemeral directory behind
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"running at {self._info.bootstrap}" if self._info and self.is_running() else "stopped"
        return f"LocalBroker({str(self._data_dir)!r}, {state})"

    # -- internals ---------------------------------------------------------------------------------

    def _choose_ports(self) -> tuple[int, int]:
        if self._ports is not None:
            # A restart must come back where clients expect it: the same bootstrap address.
            for kept in self._ports:
                _require_free(kept, "the broker's previous port, kept so clients can reconnect")
            return self._ports
        port, controller_port = self._requested
        for requested in (port, controller_port):
            if requested is not None:
                _require_free(requested, "requested explicitly")
        saved = _read_state(self._data_dir)
        saved_port, saved_controller = saved.get("port"), saved.get("controller_port")
        # Reuse the ports this data directory had, so its clients' bootstrap address stays valid.
        if port is None and isinstance(saved_port, int) and port_is_free(saved_port):
            port = saved_port
        if (
            controller_port is None
            and isinstance(saved_controller, int)
            and saved_controller != port
            and port_is_free(saved_controller)
        ):
            controller_port = saved_controller
        if saved and (port, controller_port) != (saved_port, saved_controller):
            _log.warning("ports saved in %s are taken or overridden; choosing others", self._data_dir)
        while port is None or port == controller_port:
            port = free_port()
        while controller_port is None or controller_port == port:
            controller_port = free_port()
        self._ports = (port, controller_port)
        return self._ports

    def _write_config(self, port: int, controller_port: int) -> Path:
        state = _read_state(self._data_dir)
        state.update(port=port, controller_port=controller_port, version=self._version)
        state.setdefault("cluster_id", new_cluster_id())
        (self._data_dir / _STATE).write_text(json.dumps(state, indent=2) + "\n")
        (self._data_dir / "log4j2.xml").write_text(log4j2_xml(self.log_path))
        config = self._data_dir / "server.properties"
        config.write_text(
            server_properties(
                port=port,
                controller_port=controller_port,
                log_dirs=self._data_dir / "kraft",
                overrides={**(self._setup.broker_config if self._setup else {}), **self._overrides},
            )
        )
        return config

    def _java_base(self, java: Path, libs: Path, jvm_options: tuple[str, ...]) -> list[str]:
        return [
            str(java),
            *jvm_options,
            f"-Dlog4j2.configurationFile={self._data_dir / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
        ]

    def _format_once(self, java: Path, libs: Path, config: Path) -> None:
        storage = self._data_dir / "kraft"
        if (storage / "meta.properties").exists():
            return  # formatted before: keep the cluster, its topics and records
        # Without meta.properties the broker refuses to start, so nothing here is worth keeping.
        shutil.rmtree(storage, ignore_errors=True)
        cluster_id = str(_read_state(self._data_dir)["cluster_id"])
        command = [
            *self._java_base(java, libs, TOOL_JVM_OPTIONS),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting KRaft storage timed out: {' '.join(command)}") from exc
        if done.returncode != 0 or not (storage / "meta.properties").exists():
            output = (done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:]
            raise BrokerError(
                f"formatting KRaft storage in {storage} failed (exit code {done.returncode}).\n"
                f"command: {' '.join(command)}\noutput:\n" + "\n".join(output)
            )

    def _launch(self, java: Path, libs: Path, lock: int) -> subprocess.Popen[bytes]:
        command = [*self._java_base(java, libs, JVM_OPTIONS), "kafka.Kafka", str(self._data_dir / "server.properties")]
        # stdout/stderr only carry what the JVM says before log4j is up (bad flags, no heap).
        with (self._data_dir / "logs" / "stdout.log").open("ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=self._data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals to us (Ctrl-C) do not reach it
                pass_fds=(lock,),
                preexec_fn=None if self._detached else _die_with_parent(),
            )
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"{proc.pid}\n".encode(), 0)
        return proc

    def _await_metadata(self, proc: subprocess.Popen[bytes], bootstrap: str, started: float) -> None:
        deadline = time.monotonic() + self._startup_timeout
        # A secure broker answers nobody anonymous: ask as its super user, over mTLS.
        probe = MetadataProbe(bootstrap, self._setup.info.admin_config() if self._setup else None)
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"Apache Kafka exited with code {code} while starting (after "
                    f"{time.monotonic() - started:.1f} s).\n{self._tails()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"Apache Kafka (pid {proc.pid}) did not answer a metadata request on {bootstrap} "
                    f"within {self._startup_timeout:.0f} s; it was killed.\n{self._tails()}"
                )
            if probe.ask(min(remaining, 0.25)) is not None:  # short, so an early exit is seen early
                return
            time.sleep(0.05)  # a refused connection returns at once; do not spin

    def _terminate(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        if proc.poll() is None and grace > 0:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
                _log.debug("broker pid %d stopped in %.1f s", proc.pid, time.monotonic() - started)
            except subprocess.TimeoutExpired:
                _log.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, grace)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own group: nothing of it survives
            proc.wait()
        if not self._remove_on_close:
            _cleanup_at_exit.discard(self)

    def _logged_version(self, offset: int) -> str | None:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                match = _KAFKA_VERSION_LINE.search(log.read(4_000_000).decode(errors="replace"))
        except OSError:
            return None
        return match.group(1) if match else None

    def _tails(self) -> str:
        parts = []
        for path in (self.log_path, self._data_dir / "logs" / "stdout.log"):
            lines = _tail(path, _TAIL_LINES)
            if lines:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"(nothing logged; see {self.log_path})"


def running_pid(data_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the broker currently running on ``data_dir`` (0 if its pid is unknown), else None.

    Reliable across processes and after crashes: the broker process itself holds the lock, so the
    lock is free exactly when no broker is alive, whatever pid files say.
    """
    path = Path(data_dir) / _LOCK
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _sweep_orphans() -> None:
    """Delete ephemeral data directories whose owner died (SIGKILL skips atexit) and whose broker is gone."""
    for candidate in Path(tempfile.gettempdir()).glob(f"{_EPHEMERAL_PREFIX}*"):
        try:
            owner = int((candidate / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        if not _pid_alive(owner) and running_pid(candidate) is None:
            shutil.rmtree(candidate, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(data_dir: Path) -> int:
    fd = os.open(data_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise BrokerError(
            f"{data_dir} is in use by another running broker (pid {text or 'unknown'}); stop that one "
            "first ('govbus dev broker down' if it is the dev broker) or use another data directory."
        ) from None
    return fd


def _require_free(port: int, why: str) -> None:
    if not port_is_free(port):
        raise BrokerError(
            f"port {port} on {HOST} ({why}) is already in use by another process; free it, or pass "
            "another port (or none, to pick a free one)."
        )


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / _STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _jar_version(libs: Path) -> str | None:
    for jar in libs.glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64_000))
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when we die, so a killed test run does not
    leave a 1 GB JVM behind. The signal follows the *thread* that forks, hence main thread only."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the hook only calls it
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # we died before the request took effect
            os._exit(1)

    return hook


class _Registry:
    """Brokers to stop (and ephemeral directories to delete) when the interpreter exits."""

    def __init__(self) -> None:
        self._brokers: dict[int, LocalBroker] = {}
        atexit.register(self.close_all)

    def add(self, broker: LocalBroker) -> None:
        self._brokers[id(broker)] = broker

    def discard(self, broker: LocalBroker) -> None:
        self._brokers.pop(id(broker), None)

    def close_all(self) -> None:
        for broker in list(self._brokers.values()):
            with contextlib.suppress(Exception):
                broker.close()


_cleanup_at_exit = _Registry()
