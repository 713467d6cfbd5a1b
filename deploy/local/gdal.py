"""GDAL's command-line tools (Debian package ``gdal-bin``: ``ogrinfo``, ``ogr2ogr``), the client the export tests
open our CSV and GeoJSON with. ``ensure_gdal_installed`` installs the package with apt-get when the tools are
missing (a fresh machine running ``make test``), the way ``postgres.py`` installs PostGIS."""

from __future__ import annotations

import shutil

from deploy.local.apt_packages import apt_install

GDAL_PACKAGE = "gdal-bin"
TOOLS = ("ogrinfo", "ogr2ogr")


class GdalSetupError(RuntimeError):
    """GDAL's tools are missing and could not be installed."""


def gdal_present() -> bool:
    return all(shutil.which(t) is not None for t in TOOLS)


def ensure_gdal_installed() -> None:
    """Install ``gdal-bin`` with apt-get if ``ogrinfo``/``ogr2ogr`` are missing. Raises GdalSetupError."""
    if gdal_present():
        return
    apt_install(GDAL_PACKAGE, "ogrinfo/ogr2ogr", GdalSetupError)
    if not gdal_present():
        raise GdalSetupError(f"{GDAL_PACKAGE} installed but {' / '.join(TOOLS)} still missing")
