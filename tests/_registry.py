"""A real Confluent-compatible schema registry for the tests: Apicurio Registry's ``ccompat`` API.

Which registry, in order of preference (``schema_registry_url`` fixture in conftest.py):

1. ``GOVBUS_TEST_REGISTRY_URL`` — an external registry, used as is;
2. Apicurio Registry 2.4.2.Final, in-memory storage, assembled from Maven Central with ``mvn``
   once per user (``<cache>/apicurio-registry/<version>``, ~130 MB) and started on a free
   127.0.0.1 port; its Confluent-compatible API is ``http://127.0.0.1:<port>/apis/ccompat/v7``;
3. confluent-kafka's in-process mock registry (``mock://…``), with the reason 2 failed.
   ``GOVBUS_TEST_REGISTRY=mock`` skips straight to it.

Why 2.4.2.Final and not newer (what was tried, with this machine's Java 17 and Maven Central):

* 3.3.3 (latest): its app classes are Java 21 bytecode (class version 65); Java 17 cannot load them.
* 3.0.9, 3.1.x, 3.2.x: ``apicurio-registry-app`` (or its parent pom) is not on Maven Central.
* 2.6.13.Final: depends on ``apicurio-registry-schema-util-provider:2.6.13.Final``, not on Central
  (mvn then tries the parent pom's packages.confluent.io repository: unknown host here).
* 2.4.2.Final resolves from Central with two substitutions in tests/registry/pom.xml (everit
  json-schema from com.github.erosb instead of JitPack; config-index 0.1.10.Final, whose Quarkus
  deployment artifact exists) plus bean indexing (tests/registry/build.properties).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from govbus.localkafka._paths import cache_root

VERSION = "2.4.2.Final"
CCOMPAT = "/apis/ccompat/v7"
_HERE = Path(__file__).parent / "registry"
_MARKER = "COMPLETE.json"
_BUILD_TIMEOUT = 20 * 60.0
_START_TIMEOUT = 90.0


class RegistryUnavailable(Exception):
    """The local registry could not be built or started (the message says exactly why)."""


@dataclass
class LocalRegistry:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_seconds: float

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def home(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "apicurio-registry" / VERSION


def ensure_built(cache: Path | None = None) -> Path:
    """The runnable registry jar, built with mvn into the per-user cache on first use."""
    target = home(cache)
    if (target / _MARKER).is_file():
        return target / "registry-runner.jar"
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RegistryUnavailable("needs 'mvn' and 'java' on PATH to assemble Apicurio Registry from Maven Central")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{VERSION}.lock"):
        if (target / _MARKER).is_file():
            return target / "registry-runner.jar"
        staging = Path(tempfile.mkdtemp(prefix=f".{VERSION}.tmp-", dir=target.parent))
        try:
            _build(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "registry-runner.jar"


def _build(staging: Path) -> None:
    build = staging / "build"
    resources = build / "src" / "main" / "resources"
    resources.mkdir(parents=True)
    shutil.copyfile(_HERE / "pom.xml", build / "pom.xml")
    app = staging / "app"
    _mvn(
        build,
        "dependency:copy",
        f"-Dartifact=io.apicurio:apicurio-registry-app:{VERSION}:jar",
        f"-DoutputDirectory={app}",
    )
    jar = app / f"apicurio-registry-app-{VERSION}.jar"
    with zipfile.ZipFile(jar) as z:
        properties = z.read("application.properties").decode()
    extra = (_HERE / "build.properties").read_text()
    (resources / "application.properties").write_text(properties + "\n" + extra)
    _mvn(build, "-DskipTests", "package")
    runner = next((build / "target").glob("*-runner.jar"), None)
    if runner is None:
        raise RegistryUnavailable(f"mvn package produced no *-runner.jar in {build / 'target'}")
    runner.rename(staging / "registry-runner.jar")
    (build / "target" / "lib").rename(staging / "lib")
    shutil.rmtree(build)
    shutil.rmtree(app)
    (staging / _MARKER).write_text(json.dumps({"version": VERSION, "built_at": time.strftime("%FT%T%z")}))


def _mvn(cwd: Path, *goals: str) -> None:
    command = ["mvn", "-B", "-q", *goals]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RegistryUnavailable(f"{' '.join(command)} took over {_BUILD_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line][:5]
        raise RegistryUnavailable(f"{' '.join(command)} failed (exit {done.returncode}): " + " | ".join(errors))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start(cache: Path | None = None) -> LocalRegistry:
    """Builds (once) and starts the registry on a free 127.0.0.1 port; returns once it answers."""
    runner = ensure_built(cache)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_dir = Path(tempfile.mkdtemp(prefix="govbus-registry-"))
    log_path = log_dir / "registry.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["java", "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}", "-jar", str(runner)],
            cwd=runner.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}{CCOMPAT}"
    registry = LocalRegistry(url, process, log_path, 0.0)
    deadline = started + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise RegistryUnavailable(f"the registry exited with {process.returncode}: " + " | ".join(tail))
        try:
            with urllib.request.urlopen(f"{url}/subjects", timeout=2) as answer:
                if answer.status == 200:
                    registry.startup_seconds = time.monotonic() - started
                    return registry
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    registry.close()
    raise RegistryUnavailable(
        f"the registry did not answer {url}/subjects within {_START_TIMEOUT:.0f} s (log {log_path})"
    )


def choice() -> str:
    """``external``, ``mock`` (forced) or ``local``."""
    if os.environ.get("GOVBUS_TEST_REGISTRY_URL"):
        return "external"
    if os.environ.get("GOVBUS_TEST_REGISTRY", "").lower() == "mock":
        return "mock"
    return "local"


def external_url() -> str:
    return os.environ["GOVBUS_TEST_REGISTRY_URL"]
