"""Apache Kafka broker jars, resolved once from Maven Central by Maven into a cache directory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from shredline.streams.errors import LauncherError
from shredline.streams.private import make_private_dir

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
_COMPLETE = ".complete"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shredline</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

NO_MAVEN = (
    "Maven (mvn) is not on PATH: install Maven 3 to fetch the Kafka jars, "
    "or run Kafka with `docker compose up -d kafka` and set SHREDLINE_BOOTSTRAP"
)


def ensure_jars(cache_dir: Path, progress: Callable[[str], None], version: str = KAFKA_VERSION) -> list[Path]:
    """The broker's classpath; resolves it with Maven on first use, atomically, so a crash leaves no half cache."""
    cache_dir = cache_dir.resolve()  # Maven resolves relative paths against the pom's folder, not ours
    target = cache_dir / f"kafka-{version}"
    if (target / _COMPLETE).exists():
        return sorted(target.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError(NO_MAVEN)

    work = cache_dir / f".kafka-{version}.partial"
    shutil.rmtree(work, ignore_errors=True)
    make_private_dir(work)  # its parents too: the cache sits in the data dir by default
    (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION), encoding="utf-8")
    progress(f"resolving Apache Kafka {version} jars from Maven Central (first run only)...")
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={work / 'lib'}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln] or ["(no output)"]
        raise LauncherError(f"Maven could not resolve Kafka {version}: {lines[0].strip()}")
    shutil.rmtree(target, ignore_errors=True)
    (work / "lib").rename(target)
    shutil.rmtree(work, ignore_errors=True)
    (target / _COMPLETE).touch()
    return sorted(target.glob("*.jar"))
