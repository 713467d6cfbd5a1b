"""``odc subscribe`` and ``odc subscriptions``: webhook subscriptions through the publish HTTP API, with
an operator (admin) token (``--token`` or ODC_TOKEN)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.settings import CliSettings

console = Console()
err = Console(stderr=True)


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="operator (admin) token from `odc token create --admin` (default: the ODC_TOKEN environment variable)",
        show_default=False,
    ),
]


def _api() -> str:
    return CliSettings().publish_url.rstrip("/")


def _token(given: str | None) -> str:
    if given:
        return given
    configured = CliSettings().token
    if configured is None or not configured.get_secret_value():
        err.print("[red]error:[/red] managing subscriptions needs an operator token: --token or ODC_TOKEN")
        raise typer.Exit(2)
    return configured.get_secret_value()


def _call(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{_api()}{path}"
    try:
        r = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as error:
        err.print(f"[red]error:[/red] cannot reach the publish API at {_api()}: {error}")
        raise typer.Exit(3) from error
    if r.status_code >= 400:
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else r.text
        err.print(f"[red]error:[/red] {detail}")
        raise typer.Exit(2)
    return r.json() if r.content else None


def subscribe(
    url: Annotated[str, typer.Argument(help="where to POST each version's CloudEvent (http or https)")],
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="dataset to receive (repeat; default: every dataset)")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="signing secret whsec_<base64 of 24..64 bytes> (default: a generated one, printed once)"),
    ] = None,
    description: Annotated[str, typer.Option(help="free text to recognise the subscription")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    token: TokenOption = None,
) -> None:
    """Register a webhook: every new version of the chosen datasets is POSTed to URL, signed, in order."""
    created = _call(
        "POST",
        "/subscriptions",
        _token(token),
        {"url": url, "datasets": dataset or None, "secret": secret, "description": description},
    )
    if as_json:
        print(json.dumps(created, ensure_ascii=False))
        return
    console.print(f"subscription [bold]{created['id']}[/bold] → {created['url']}")
    console.print(f"datasets: {', '.join(created['datasets'] or ['(all)'])}")
    console.print(f"secret (keep it, it is not shown again): [bold]{created['secret']}[/bold]")


def subscriptions(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    token: TokenOption = None,
) -> None:
    """Every webhook subscription and the state of its deliveries."""
    doc = _call("GET", "/subscriptions", _token(token))
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
        return
    t = Table("id", "url", "datasets", "pending", "delivered", "dead", "last attempt", "active")
    for s in doc["subscriptions"]:
        last = s["last_attempt"]
        outcome = "—" if last["at"] is None else f"{last['at']} {last['status'] or ''} {last['error'] or ''}".strip()
        d = s["deliveries"]
        t.add_row(
            s["id"],
            s["url"],
            ", ".join(s["datasets"] or ["(all)"]),
            str(d["pending"]),
            str(d["delivered"]),
            f"[red]{d['dead']}[/red]" if d["dead"] else "0",
            outcome,
            "yes" if s["active"] else "no",
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command()(subscribe)
    app.command()(subscriptions)
