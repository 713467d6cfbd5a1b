"""How every odc Kafka client connects: SASL/SCRAM-SHA-512 as its own principal, over TLS checked against the
broker's CA (docs/security.md, "Kafka broker"). The one place that builds the aiokafka keyword arguments, so no
client can be made without credentials by copying a constructor. Producers also get the request size of
services/contract/size_limits.py, which the broker's ``message.max.bytes`` allows (deploy/local/kafka.py).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from services.contract import size_limits

SASL_MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")
# Every odc producer compresses its batches with zstd (aiokafka's codecs come from cramjam, a dependency, which
# also lets the consumers read a commune client's gzip, snappy, lz4 or zstd batches). `python -m
# benchmarks.topic_compression`: FeatureChangeBatch messages of 1,000 toilets, CPU per change of producer,
# consumer and broker together 11.0 µs uncompressed, 4.9 zstd, 8.7 lz4 (docs/performance.md). Only odc's
# services and tools read odc's topics, all through aiokafka with cramjam.
PRODUCER_COMPRESSION = "zstd"


class KafkaClientSettings(Protocol):
    """The fields a service's settings carry to reach the broker (ODC_<SERVICE>_KAFKA_*)."""

    kafka_username: str
    kafka_password: SecretStr
    kafka_security_protocol: str
    kafka_ssl_cafile: str | None


@dataclass(frozen=True)
class KafkaClientSecurity:
    """One principal's credentials and how to reach the broker's listener."""

    username: str
    password: SecretStr
    security_protocol: str = "SASL_SSL"
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"kafka security protocol must be one of {SECURITY_PROTOCOLS}, not {self.security_protocol!r}"
            )
        if not self.username:
            raise ValueError("a Kafka client needs a username (anonymous clients are refused by the broker)")
        if not self.password.get_secret_value():
            raise ValueError(
                f"Kafka user {self.username!r} has no password: set ODC_<SERVICE>_KAFKA_PASSWORD (for the local "
                'stack of `make run`: eval "$(python -m deploy.local env)")'
            )

    @classmethod
    def from_settings(cls, settings: KafkaClientSettings) -> KafkaClientSecurity:
        return cls(
            username=settings.kafka_username,
            password=settings.kafka_password,
            security_protocol=settings.kafka_security_protocol,
            ssl_cafile=settings.kafka_ssl_cafile or None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol != "SASL_SSL":
            return None
        # the broker's certificate must chain to this CA and name the host we dial (127.0.0.1, localhost, kafka)
        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        return {
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password.get_secret_value(),
        }

    def producer_kwargs(self) -> dict[str, Any]:
        """client_kwargs plus what every odc producer shares: the request size agreed with the broker, and
        batches compressed with zstd (``PRODUCER_COMPRESSION``)."""
        return {
            **self.client_kwargs(),
            "max_request_size": size_limits.PRODUCER_MAX_REQUEST_BYTES,
            "compression_type": PRODUCER_COMPRESSION,
        }
