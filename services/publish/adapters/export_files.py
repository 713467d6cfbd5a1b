"""Export documents kept as files in a local directory (the ``ExportFiles`` port).

A version's exports never change, so each is written once, in chunks as the read model streams it (memory stays
bounded whatever the size), renamed into place atomically, and then served from disk with its length and byte
ranges. Concurrent first requests for the same document wait for one writer. The directory is bounded: when its
files pass ``max_bytes``, the least recently used are removed (a file is "used" when served; files used in the
last ``keep_seconds`` are never removed, so a response being sent keeps its file).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.to_thread

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
PARTIAL = ".partial"


class LocalExportFiles:
    def __init__(self, directory: str | Path | None = None, max_bytes: int = 2 << 30, keep_seconds: float = 300.0):
        """``directory`` None or empty: a fresh temporary directory, made on first use and removed at exit."""
        self._directory = Path(directory) if directory else None
        self._max_bytes = max_bytes
        self._keep_seconds = keep_seconds
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="odc-exports-"))
            atexit.register(shutil.rmtree, self._directory, ignore_errors=True)  # its own: removed at exit
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    async def file(self, name: str, produce: Callable[[], AsyncIterator[bytes]]) -> Path:
        path = self.directory / _UNSAFE.sub("_", name)
        lock = self._locks.setdefault(path.name, asyncio.Lock())  # held by its users only (weak values)
        async with lock:
            if _touch(path):
                return path
            partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL}")
            try:
                async with await anyio.open_file(partial, "wb") as out:
                    async for chunk in produce():
                        await out.write(chunk)
                os.replace(partial, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
        await anyio.to_thread.run_sync(self._evict, path)
        return path

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used files until the directory is within ``max_bytes``."""
        files: list[tuple[float, int, Path]] = []
        for entry in os.scandir(self.directory):
            if entry.is_file() and not entry.name.endswith(PARTIAL):
                st = entry.stat()
                files.append((st.st_mtime, st.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        recent = time.time() - self._keep_seconds
        for mtime, size, path in sorted(files):
            if total <= self._max_bytes:
                break
            if path == keep or mtime >= recent:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size


def _touch(path: Path) -> bool:
    """Mark ``path`` used now; False when it does not exist."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True
