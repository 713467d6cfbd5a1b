"""A headless QGIS reading one collection of our OGC API - Features with its "oapif" provider, as a QGIS user's
"Add WFS / OGC API - Features layer" does. Run with Debian's Python and python3-qgis (not the project's venv):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/integration/qgis_oapif_client.py <ogc url> <collection> [subset]

Prints one JSON object: QGIS's version, whether the layer is valid (and the provider's errors), the fields with
their QGIS types, the features (id and attributes; geometry as WKT), and every URL QGIS requested, in order.
``subset`` is a QGIS subset string (the layer filter a user types), applied with ``setSubsetString``."""

from __future__ import annotations

import json
import sys
from typing import Any


def main(url: str, collection: str, subset: str | None) -> dict[str, Any]:
    from qgis.core import Qgis, QgsApplication, QgsNetworkAccessManager, QgsNetworkRequestParameters, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    requested: list[str] = []
    QgsNetworkAccessManager.instance().requestAboutToBeCreated[QgsNetworkRequestParameters].connect(
        lambda r: requested.append(r.request().url().toString())
    )
    try:
        layer = QgsVectorLayer(f"url='{url}' typename='{collection}'", collection, "oapif")
        out: dict[str, Any] = {
            "qgis": Qgis.QGIS_VERSION,
            "valid": layer.isValid(),
            # (not layer.error(): with PyQGIS 3.22 its summary() crashes the interpreter)
            "error": layer.dataProvider().errors() if layer.dataProvider() is not None else None,
        }
        if layer.isValid():
            if subset is not None:
                out["subset_accepted"] = layer.setSubsetString(subset)
            out["fields"] = {f.name(): f.typeName() for f in layer.fields()}
            out["feature_count"] = layer.featureCount()
            out["features"] = [
                {
                    "attributes": {
                        name: (
                            None
                            if value is None or (hasattr(value, "isNull") and value.isNull())
                            else value
                            if isinstance(value, (str, int, float, bool, list, dict))
                            else str(value)
                        )
                        for name, value in zip(layer.fields().names(), f.attributes(), strict=True)
                    },
                    "wkt": f.geometry().asWkt(7) if f.hasGeometry() else None,
                }
                for f in layer.getFeatures()
            ]
            out["provider_errors"] = layer.dataProvider().errors()
        app.processEvents()  # the requests' signals, queued from the provider's download thread
        out["requests"] = requested
        del layer  # before exitQgis: a layer destroyed after it crashes the WFS/OAPIF provider's cache teardown
        return out
    finally:
        app.exitQgis()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None), default=str))
