"""The push API's source-profile resource: ``/v1/profiles``. A commune's token reads and saves its own
commune's profiles; the admin token any commune's and the Métropole's (commune ``*``). Saving is a new
version; reading gives the latest or a given version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from services.contract.api_tokens import Principal
from services.contract.datasets.catalogue import DatasetCatalogue
from services.ingest.domain.source_profiles import ProfileError, profile_from_dict, profile_to_dict
from services.ingest.service_layer.ports import ProfileStore, StoredProfile

COMMUNE_OR_ALL = r"^(\d{5}|2[AB]\d{3}|\*)$"
ALL_COMMUNES = "*"


def stored_doc(p: StoredProfile, with_profile: bool = True) -> dict[str, Any]:
    return {
        "commune": p.commune,
        "dataset": p.dataset,
        "source": p.source,
        "version": p.version,
        "saved_by": p.saved_by,
        "saved_at": p.saved_at.isoformat(),
        **({"profile": p.profile} if with_profile else {}),
    }


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def may_access(principal: Principal, commune: str) -> bool:
    return principal.commune is None or principal.commune == commune


def profile_router(
    *,
    catalogue: DatasetCatalogue,
    principal_of: Callable[[str | None], Awaitable[Principal | JSONResponse]],
    store_of: Callable[[], ProfileStore | None],
) -> APIRouter:
    router = APIRouter(prefix="/v1/profiles", tags=["source profiles"])

    def store_or_503() -> ProfileStore | JSONResponse:
        store = store_of()
        if store is None:
            return JSONResponse(
                {"error": "not_ready", "message": "the service is starting"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return store

    @router.get("", summary="Saved source profiles (latest version of each) this token may read")
    async def list_profiles(
        dataset: str | None = Query(default=None, max_length=100),
        authorization: str | None = Header(default=None, description="Bearer <token>"),
    ) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        store = store_or_503()
        if isinstance(store, JSONResponse):
            return store
        rows = await store.list_latest(principal.commune, dataset)
        return JSONResponse({"profiles": [stored_doc(r, with_profile=False) for r in rows]})

    @router.get("/{commune}/{dataset}/{source}", summary="A saved source profile (latest, or ?version=N)")
    async def get_profile(
        commune: str = Path(pattern=COMMUNE_OR_ALL),
        dataset: str = Path(max_length=100),
        source: str = Path(max_length=200),
        version: int | None = Query(default=None, ge=1),
        authorization: str | None = Header(default=None, description="Bearer <token>"),
    ) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        if not may_access(principal, commune):
            return _error(403, "forbidden_commune", f"this token is for commune {principal.commune}, not {commune}")
        store = store_or_503()
        if isinstance(store, JSONResponse):
            return store
        found = await store.get(commune, dataset, source, version)
        if found is None:
            return _error(404, "unknown_profile", f"no profile {commune}/{dataset}/{source}")
        versions = [v.version for v in await store.versions(commune, dataset, source)]
        return JSONResponse({**stored_doc(found), "versions": versions})

    @router.put(
        "/{commune}/{dataset}/{source}",
        status_code=201,
        summary="Save a source profile: a new version of (commune, dataset, source)",
    )
    async def save_profile(
        request: Request,
        commune: str = Path(pattern=COMMUNE_OR_ALL),
        dataset: str = Path(max_length=100),
        source: str = Path(max_length=200, pattern=r"^[^/\s][^/]*$"),
        document: dict[str, Any] = Body(description="a profile document, as `odc profile suggest` writes it"),  # noqa: B008
        authorization: str | None = Header(default=None, description="Bearer <token>"),
    ) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        if not may_access(principal, commune):
            return _error(403, "forbidden_commune", f"this token is for commune {principal.commune}, not {commune}")
        if catalogue.get(dataset) is None:
            return _error(404, "unknown_dataset", f"unknown dataset {dataset!r}")
        try:
            profile = profile_from_dict({**document, "dataset": document.get("dataset", dataset)})
        except ProfileError as bad:
            return _error(400, "invalid_profile", str(bad))
        if profile.dataset != dataset:
            return _error(400, "invalid_profile", f"the profile is for {profile.dataset!r}, not {dataset!r}")
        store = store_or_503()
        if isinstance(store, JSONResponse):
            return store
        saved = await store.save(commune, dataset, source, profile_to_dict(profile), principal.commune or "admin")
        return JSONResponse(stored_doc(saved), status_code=201)

    return router
