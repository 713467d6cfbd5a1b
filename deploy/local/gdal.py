"""GDAL's command-line tools (Debian package ``gdal-bin``: ``ogrinfo``, ``ogr2ogr``), the client the export tests
open our CSV and GeoJSON with. ``ensure_gdal_installed`` installs the package with apt-get when the tools are
missing (a fresh machine running ``make test``), the way ``postgres.py`` installs PostGIS."""

from __future__ import annotations

import os
import shutil
import subprocess

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
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise GdalSetupError(
            f"ogrinfo/ogr2ogr not found and cannot install them here: run sudo apt-get install -y {GDAL_PACKAGE}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (
        ["apt-get", *lock_wait, "update", "-q"],
        ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", GDAL_PACKAGE],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise GdalSetupError(
                f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
    if not gdal_present():
        raise GdalSetupError(f"{GDAL_PACKAGE} installed but {' / '.join(TOOLS)} still missing")
