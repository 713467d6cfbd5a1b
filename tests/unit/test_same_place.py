"""Same place, two records: the link decision, table-driven."""

from __future__ import annotations

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue, SamePlacePolicy
from services.normalise.domain.same_place import Link, PlacedRecord, distance_m, same_place

MARKETS = SamePlacePolicy(distance_m=30, match_fields=("type",), distinct_fields=("jourtenue", "horaires"))
TOILETS = SamePlacePolicy(distance_m=10)


def rec(source: str, lon: float, lat: float, **attrs: object) -> PlacedRecord:
    return PlacedRecord(source, lon, lat, attrs)


# Place de l'Europe, Irigny (the real markets layer: gid 46 and 47, same point, Saturday and Wednesday)
IRIGNY = (4.8227235, 45.6724498)
ABOUT_8M_NORTH = (4.8227235, 45.6725218)
ABOUT_80M_EAST = (4.8237500, 45.6724498)


@pytest.mark.parametrize(
    ("a", "b", "policy", "expected"),
    [
        # the same market sent by the commune and by the Métropole: one real thing
        (
            rec("irigny", *IRIGNY, type="mixte", jourtenue="Samedi"),
            rec("metropole", *ABOUT_8M_NORTH, type="Mixte", jourtenue="samedi"),
            MARKETS,
            Link.SAME,
        ),
        # one spot, two days: two markets
        (
            rec("irigny", *IRIGNY, type="mixte", jourtenue="Samedi"),
            rec("metropole", *IRIGNY, type="mixte", jourtenue="Mercredi"),
            MARKETS,
            Link.DISTINCT,
        ),
        # a distinct field missing on one side does not separate them
        (
            rec("irigny", *IRIGNY, type="mixte", jourtenue="Samedi"),
            rec("metropole", *IRIGNY, type="mixte", jourtenue=None),
            MARKETS,
            Link.SAME,
        ),
        # same spot, different kind of market
        (
            rec("irigny", *IRIGNY, type="alimentaire"),
            rec("metropole", *IRIGNY, type="mixte"),
            MARKETS,
            Link.ATTRIBUTES_DIFFER,
        ),
        # too far apart
        (rec("irigny", *IRIGNY, type="mixte"), rec("metropole", *ABOUT_80M_EAST, type="mixte"), MARKETS, Link.TOO_FAR),
        # one source's two records are never merged behind its back
        (rec("metropole", *IRIGNY), rec("metropole", *IRIGNY), TOILETS, Link.SAME_SOURCE),
        # exactly at the distance still counts; a dataset with distance 0 never links
        (rec("a", *IRIGNY), rec("b", *ABOUT_8M_NORTH), SamePlacePolicy(distance_m=8.01), Link.SAME),
        (rec("a", *IRIGNY), rec("b", *IRIGNY), SamePlacePolicy(distance_m=0), Link.DISABLED),
        # text compared folded (case, accents, spaces), numbers as written
        (
            rec("a", *IRIGNY, nom="Parc de la Tête d'Or"),
            rec("b", *IRIGNY, nom="PARC DE LA TETE D'OR"),
            SamePlacePolicy(10, ("nom",)),
            Link.SAME,
        ),
        (
            rec("a", *IRIGNY, numero=1),
            rec("b", *IRIGNY, numero=2),
            SamePlacePolicy(15, ("numero",), ("numero",)),
            Link.DISTINCT,
        ),
    ],
)
def test_link_decision(a: PlacedRecord, b: PlacedRecord, policy: SamePlacePolicy, expected: Link) -> None:
    assert same_place(a, b, policy) is expected
    assert same_place(b, a, policy) is expected  # symmetric


def test_distance_is_metres_on_the_ground() -> None:
    assert 7.5 < distance_m(rec("a", *IRIGNY), rec("b", *ABOUT_8M_NORTH)) < 8.5
    assert 75 < distance_m(rec("a", *IRIGNY), rec("b", *ABOUT_80M_EAST)) < 85


def test_every_dataset_declares_its_policy_and_markets_keep_days_apart() -> None:
    cat = DatasetCatalogue.load()
    markets = cat.get("markets")
    assert markets is not None and "jourtenue" in markets.same_place.distinct_fields
    linked = [d.id for d in cat if d.same_place.distance_m > 0]
    assert set(linked) >= {"markets", "public_toilets", "defibrillators", "carpool_places", "drinking_fountains"}
    assert cat.get("subsidies").same_place.distance_m == 0  # type: ignore[union-attr]  # no geometry, no place


@pytest.mark.parametrize(
    ("a", "b", "allowed"),
    [
        ({"type": "Mixte", "jourtenue": "samedi"}, {"type": "mixte", "jourtenue": "Samedi"}, True),
        ({"type": "mixte", "jourtenue": "samedi"}, {"type": "mixte", "jourtenue": "mercredi"}, False),
        ({"type": "alimentaire"}, {"type": "mixte"}, False),
        ({"type": "mixte", "jourtenue": None}, {"type": "mixte", "jourtenue": "mercredi"}, True),
    ],
)
def test_the_attribute_half_agrees_with_the_whole_decision_at_one_point(
    a: dict[str, object], b: dict[str, object], allowed: bool
) -> None:
    from services.normalise.domain.same_place import attributes_allow

    assert attributes_allow(a, b, MARKETS) is allowed
    assert (same_place(rec("x", *IRIGNY, **a), rec("y", *IRIGNY, **b), MARKETS) is Link.SAME) is allowed
