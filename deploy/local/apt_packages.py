"""Install one of Debian's packages for the project's tools (GDAL, QGIS, ...) with apt-get, the one way
``deploy/local`` does it: only as root, non-interactive, waiting for the dpkg lock, without recommends."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(package: str, missing: str, error: type[Exception]) -> None:
    """``apt-get update`` then ``install`` ``package``; raise ``error`` saying what is ``missing`` and how to
    install it by hand when not root or without apt-get, or with apt-get's output when it fails."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise error(f"{missing} not found and cannot install them here: run sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (
        ["apt-get", *lock_wait, "update", "-q"],
        ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", package],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise error(f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
