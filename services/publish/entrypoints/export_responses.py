"""The answer of an export kept as a file: Starlette's ``FileResponse`` (``Content-Length``,
``Accept-Ranges: bytes``, 206 with ``Content-Range``, ``multipart/byteranges`` for several ranges, 416 with
``Content-Range: bytes */size``, ``If-Range`` against the strong ETag), with the ``Range`` header first read as
RFC 9110 says (``domain.byte_ranges``): an invalid one is ignored (200, the whole file, where Starlette would
answer 400), ranges beyond the end are dropped when others are satisfiable."""

from __future__ import annotations

import os
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse

from services.publish.domain.api_documents import VersionRecord
from services.publish.domain.byte_ranges import Parts, Unsatisfiable, Whole, requested_ranges


class ExportFileResponse(FileResponse):
    def __init__(self, path: Path, *, media_type: str, headers: dict[str, str], version: VersionRecord) -> None:
        headers = {"Last-Modified": format_datetime(version.summary.published_at, usegmt=True), **headers}
        super().__init__(path, media_type=media_type, headers=headers, stat_result=os.stat(path))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raw = [(k, v) for k, v in scope["headers"] if k != b"range"]
        asked = [v.decode("latin-1") for k, v in scope["headers"] if k == b"range"]
        answer = requested_ranges(asked[0] if len(asked) == 1 else None, self.stat_result.st_size)  # type: ignore[union-attr]
        if isinstance(answer, Parts):
            raw.append((b"range", answer.header().encode("latin-1")))
        elif isinstance(answer, Unsatisfiable):
            raw.append((b"range", f"bytes={answer.size}-".encode("latin-1")))  # Starlette's 416
        else:
            assert isinstance(answer, Whole)
        await super().__call__({**scope, "headers": raw}, receive, send)
