"""QGIS's Python bindings (Debian package ``python3-qgis``, QGIS 3.22 on bookworm, with its providers), the desktop
GIS client the OGC API tests load our collections with, headless. ``ensure_qgis_installed`` installs the package with
apt-get when ``import qgis.core`` fails for Debian's Python (a fresh machine running ``make test``), the way
``gdal.py`` installs GDAL's tools. About 170 packages, 195 MB downloaded, 930 MB on disk, ~100 s (measured)."""

from __future__ import annotations

import os
import subprocess

from deploy.local.apt_packages import apt_install

QGIS_PACKAGE = "python3-qgis"
SYSTEM_PYTHON = "/usr/bin/python3"  # the bindings are built for Debian's Python, not for the project's venv


class QgisSetupError(RuntimeError):
    """QGIS's Python bindings are missing and could not be installed."""


def qgis_present() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False, timeout=120)
    return probe.returncode == 0


def ensure_qgis_installed() -> None:
    """Install ``python3-qgis`` with apt-get if Debian's Python cannot import ``qgis.core``. Raises QgisSetupError."""
    if qgis_present():
        return
    apt_install(QGIS_PACKAGE, "QGIS's Python bindings", QgisSetupError)
    if not qgis_present():
        raise QgisSetupError(f"{QGIS_PACKAGE} installed but {SYSTEM_PYTHON} still cannot import qgis.core")
