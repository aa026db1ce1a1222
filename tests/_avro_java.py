"""Apache Avro for Java, the reference implementation, for the interop tests.

``avro_java()`` resolves ``org.apache.avro:avro`` and its dependencies from Maven Central with
``mvn dependency:copy-dependencies`` (tests/interop/avro-java/pom.xml) once per user into
``<cache>/avro-java/<version>/libs`` (``~/.cache/govbus`` unless ``GOVBUS_CACHE_DIR`` says
otherwise), the way ``govbus.localkafka`` fetches the Kafka broker and with its helpers (lock,
staging directory renamed into place with a completion marker), then compiles
tests/interop/avro-java/AvroInterop.java with ``javac`` into the same cache, keyed by the source's
digest. Needs a JDK (``javac``; ``make system-deps`` installs openjdk-17-jdk-headless) and Maven.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from govbus.localkafka._fetch import _locked, _replace, _run_mvn
from govbus.localkafka._paths import cache_root

AVRO_VERSION = "1.12.0"
HERE = Path(__file__).parent / "interop" / "avro-java"
POM = HERE / "pom.xml"
SOURCE = HERE / "AvroInterop.java"
_MARKER = "COMPLETE.json"


class AvroJavaUnavailable(Exception):
    """Java, javac or Maven is missing, or the fetch or compile failed (the message says which)."""


@dataclass(frozen=True)
class AvroJava:
    java: str
    classpath: str  # the Avro jars and the compiled AvroInterop class
    version: str

    def run(self, work: Path, schema_files: list[Path], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.java, "-cp", self.classpath, "AvroInterop", str(work), *map(str, schema_files)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def avro_java(version: str = AVRO_VERSION, progress: TextIO | None = sys.stderr) -> AvroJava:
    tools = {name: shutil.which(name) for name in ("java", "javac", "mvn")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise AvroJavaUnavailable(
            f"{', '.join(missing)} not on PATH: the Avro interop test needs a JDK 17 (javac) and Maven "
            "(make system-deps installs openjdk-17-jdk-headless and maven)"
        )
    libs = _ensure_jars(version, tools["mvn"] or "mvn", progress)
    classes = _compile(libs, tools["javac"] or "javac", version)
    return AvroJava(tools["java"] or "java", f"{libs}/*:{classes}", version)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _ensure_jars(version: str, mvn: str, progress: TextIO | None) -> Path:
    home = cache_root() / "avro-java" / version

    def cached() -> Path | None:
        try:
            marker = json.loads((home / _MARKER).read_text())
        except (OSError, ValueError):
            return None
        return home / "libs" if isinstance(marker, dict) and marker.get("pom_sha256") == _digest(POM) else None

    found = cached()
    if found is not None:
        return found
    home.parent.mkdir(parents=True, exist_ok=True)
    with _locked(home.parent / f".{version}.lock", progress):
        found = cached()
        if found is not None:
            return found
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=home.parent))
        try:
            pom = staging / "pom.xml"
            shutil.copyfile(POM, pom)
            command = [
                mvn,
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
                "-DincludeScope=runtime",
                f"-Davro.version={version}",
            ]
            if progress is not None:
                progress.write(f"govbus: fetching Apache Avro {version} for Java from Maven Central into {home}\n")
            try:
                _run_mvn(command, staging, progress, what=f"Apache Avro {version} for Java")
            except Exception as exc:
                raise AvroJavaUnavailable(str(exc)) from None
            jars = sorted(p.name for p in (staging / "libs").glob("*.jar"))
            if f"avro-{version}.jar" not in jars:
                raise AvroJavaUnavailable(f"mvn finished but avro-{version}.jar is not among {jars}")
            pom.unlink()
            marker = {"version": version, "pom_sha256": _digest(POM), "jars": jars, "fetched_at": time.time()}
            (staging / _MARKER).write_text(json.dumps(marker, indent=2))
            _replace(home, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home / "libs"


def _compile(libs: Path, javac: str, version: str) -> Path:
    classes = cache_root() / "avro-java" / version / "classes" / _digest(SOURCE)[:16]
    if (classes / "AvroInterop.class").is_file():
        return classes
    classes.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=classes.parent))
    try:
        done = subprocess.run(
            [javac, "-cp", f"{libs}/*", "-d", str(staging), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AvroJavaUnavailable(f"javac failed on {SOURCE}:\n{done.stdout}{done.stderr}")
        try:
            staging.rename(classes)
        except OSError:
            if not (classes / "AvroInterop.class").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return classes
