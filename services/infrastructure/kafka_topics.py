"""Create the topics a service uses, with the partition counts it needs (auto-create is off)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code

from services.infrastructure.kafka_security import KafkaClientSecurity

log = logging.getLogger("odc.kafka")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


async def ensure_topics(
    bootstrap: str, specs: list[TopicSpec], *, security: KafkaClientSecurity, timeout: float = 60.0
) -> None:
    """Create the topics of ``specs`` that the broker does not list (a principal that may only write a topic
    sees it, so it never needs the right to create it). A refusal by the broker's ACLs raises at once."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **security.client_kwargs())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [s for s in specs if s.name not in existing]
            if missing:
                try:
                    resp = await admin.create_topics(
                        [
                            NewTopic(
                                s.name, num_partitions=s.partitions, replication_factor=1, topic_configs=dict(s.config)
                            )
                            for s in missing
                        ]
                    )
                    for name, code, *rest in resp.topic_errors:
                        if code not in (0, TopicAlreadyExistsError.errno):
                            raise for_code(code)(f"create topic {name}: {rest}")
                    log.info("created topics %s", ", ".join(s.name for s in missing))
                except TopicAlreadyExistsError:
                    pass
            return
        except TopicAuthorizationFailedError as err:
            raise RuntimeError(
                f"Kafka user {security.username!r} may not create topics {[s.name for s in specs]} on {bootstrap}"
            ) from err
        except KafkaError as err:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"could not create topics on {bootstrap}: {err}") from err
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
