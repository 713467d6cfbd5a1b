"""The small Java programs in kafka_clients/ that the standard-client tests run against the real broker: compiled
once per module, connecting with the properties a client's IT would write (SASL_SSL, SCRAM-SHA-512, the CA)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from deploy.local.kafka import KafkaBroker

CLIENTS = Path(__file__).parent / "kafka_clients"


def compile_client(source: str, classpath: Sequence[Path], out: Path) -> str:
    """Compile ``kafka_clients/<source>`` into ``out``; the ``java`` of the same JDK."""
    javac = shutil.which("javac")
    assert javac, "javac (JDK 17) is needed, as for the broker"
    cp = ":".join(map(str, classpath))
    subprocess.run([javac, "-cp", cp, "-d", str(out), str(CLIENTS / source)], check=True, timeout=120)
    return str(Path(javac).resolve().parent / "java")


def client_properties(broker: KafkaBroker, user: str, path: Path, extra: str = "") -> Path:
    """The connection properties of ``user`` (0600: they hold its password), plus ``extra`` lines."""
    path.touch(mode=0o600)
    path.write_text(
        f"bootstrap.servers={broker.bootstrap}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{broker.access.passwords[user]}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={broker.access.ca_file}\n{extra}"
    )
    return path
