"""The normaliser's handler with signature checks: a commune's key cannot change another commune's
features, nothing of a refused event is written, the rest of the batch flows; accepted events are tallied
per commune for the communes' status."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import EventAuthenticator, SigningKey, sign
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.normalise.domain.canonical_feature import EventNormaliser, FeatureKey
from services.normalise.service_layer.process_batch import InboundMessage, process_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork

CODECS = Codecs()
NORMALISER = EventNormaliser(DatasetCatalogue.load())
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
VILLEURBANNE = SigningKey("k-69266", b"v" * 32, "69266")
LYON = SigningKey("k-69123", b"l" * 32, "69123")
ADMIN = SigningKey("k-admin", b"a" * 32, None)
AUTH = EventAuthenticator({k.key_id: k for k in (VILLEURBANNE, LYON, ADMIN)})


class FixedClock:
    def now(self) -> datetime:
        return NOW


def toilet(gid: int, commune: str) -> ChangeEvent:
    return ChangeEvent(
        str(uuid.uuid4()),
        "public_toilets",
        commune,
        str(gid),
        Operation.UPSERT,
        NOW,
        1,
        "test",
        RawGeometry(
            GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": [4.88 + gid * 0.001, 45.77]}).encode()
        ),
        {"gid": gid, "codinsee": commune, "adresse": "1 place Lazare Goujon"},
    )


def message(ev: ChangeEvent, key: SigningKey | None, offset: int) -> InboundMessage:
    value = CODECS.encode_change_event(ev)
    return InboundMessage(value, SourcePosition("in", 0, offset), tuple(sign(value, key)) if key else ())


async def test_a_commune_key_cannot_write_another_communes_feature_and_the_rest_flows() -> None:
    store = InMemoryNormaliseStore()
    own, foreign, unsigned, by_admin = toilet(1, "69266"), toilet(2, "69123"), toilet(3, "69266"), toilet(4, "69123")
    report = await process_batch(
        [
            message(own, VILLEURBANNE, 0),
            message(foreign, VILLEURBANNE, 1),
            message(unsigned, None, 2),
            message(by_admin, ADMIN, 3),
        ],
        codecs=CODECS,
        normaliser=NORMALISER,
        uow_factory=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(),
        authenticator=AUTH,
    )
    assert set(store.features) == {
        FeatureKey("public_toilets", "69266", "1"),
        FeatureKey("public_toilets", "69123", "4"),
    }
    reasons = {r.event_id: r.reason for r in store.rejections.values()}
    assert reasons == {foreign.event_id: "forbidden_commune", unsigned.event_id: "unauthenticated"}
    assert foreign.event_id not in store.processed and unsigned.event_id not in store.processed
    assert report.rejections[("public_toilets", "forbidden_commune")] == 1
    assert store.tally == {("public_toilets", "69266", "created"): 1, ("public_toilets", "69123", "created"): 1}


async def test_without_an_authenticator_the_handler_checks_nothing() -> None:
    store = InMemoryNormaliseStore()
    await process_batch(
        [message(toilet(5, "69123"), None, 0)],
        codecs=CODECS,
        normaliser=NORMALISER,
        uow_factory=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(),
    )
    assert FeatureKey("public_toilets", "69123", "5") in store.features
