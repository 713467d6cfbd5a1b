"""kcat (Debian package ``kcat``, 1.7.1 on bookworm), the command-line Kafka client a commune's IT may produce to
the input topic with; ``tests/integration/test_standard_kafka_clients.py`` sends signed events with it.

``ensure_kcat_installed`` installs the package with apt-get when ``kcat`` is missing (a fresh machine running
``make test``), the way ``gdal.py`` installs GDAL's tools.

kcat is librdkafka, and librdkafka before 2.6.1 cannot log in with SCRAM to a Kafka 4 broker: it sent the
server's nonce twice in its final SCRAM message, which Kafka 4 checks strictly (librdkafka PR #4895); the broker
answers "Authentication failed during authentication due to invalid credentials", whatever the password.
Debian bookworm's kcat runs on its librdkafka1 2.0.2. ``kcat_environment`` gives kcat a librdkafka that logs in:
none needed when the system's is recent enough, else ``LD_LIBRARY_PATH`` to the one bundled in the
``confluent-kafka`` wheel (a dev dependency; kcat uses librdkafka's stable C ABI), linked as
``<repo>/.local/librdkafka/librdkafka.so.1``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from deploy.local import REPO_ROOT
from deploy.local.apt_packages import apt_install

KCAT_PACKAGE = "kcat"
# the first librdkafka whose SCRAM login a Kafka 4 broker accepts (librdkafka PR #4895, 2.6.1 release notes)
SCRAM_ON_KAFKA_4_SINCE = (2, 6, 1)


class KcatSetupError(RuntimeError):
    """kcat is missing and could not be installed, or no librdkafka that logs in to Kafka 4 was found."""


def kcat_path() -> str | None:
    return shutil.which("kcat")


def ensure_kcat_installed() -> str:
    """The path of ``kcat``, installing the Debian package with apt-get if it is missing. Raises KcatSetupError."""
    found = kcat_path()
    if found:
        return found
    apt_install(KCAT_PACKAGE, "kcat", KcatSetupError)
    found = kcat_path()
    if not found:
        raise KcatSetupError(f"{KCAT_PACKAGE} installed but kcat is still not on PATH")
    return found


def librdkafka_version(kcat: str, env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """The version of the librdkafka ``kcat`` runs on (from ``kcat -V``), with ``env`` added to its environment."""
    out = subprocess.run(
        [kcat, "-V"], env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False, timeout=30
    ).stdout
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    if found is None:
        raise KcatSetupError(f"cannot read the librdkafka version from `{kcat} -V`: {out[-300:]!r}")
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def _bundled_librdkafka() -> Path:
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or spec.origin is None:
        raise KcatSetupError("confluent-kafka (a dev dependency, for its librdkafka) is not installed: make deps")
    libs = sorted((Path(spec.origin).parent.parent / "confluent_kafka.libs").glob("librdkafka*.so*"))
    if not libs:
        raise KcatSetupError(f"no librdkafka in the confluent-kafka wheel beside {spec.origin}")
    return libs[0]


def kcat_environment(kcat: str, repo_root: Path | None = None) -> dict[str, str]:
    """What to add to kcat's environment so it can log in to a Kafka 4 broker with SCRAM (module docstring)."""
    if librdkafka_version(kcat) >= SCRAM_ON_KAFKA_4_SINCE:
        return {}
    lib_dir = (repo_root or REPO_ROOT) / ".local" / "librdkafka"
    lib_dir.mkdir(parents=True, exist_ok=True)
    link, target = lib_dir / "librdkafka.so.1", _bundled_librdkafka()
    if not link.is_symlink() or link.resolve() != target.resolve():
        tmp = lib_dir / f".librdkafka.so.1.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)  # atomic: a concurrent session sees the old link or the new one
    env = {"LD_LIBRARY_PATH": os.pathsep.join(p for p in (str(lib_dir), os.environ.get("LD_LIBRARY_PATH")) if p)}
    version = librdkafka_version(kcat, env)
    if version < SCRAM_ON_KAFKA_4_SINCE:
        raise KcatSetupError(f"kcat still runs on librdkafka {'.'.join(map(str, version))} with {env}")
    return env
