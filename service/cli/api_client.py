"""Talking to the hardlabel API from the CLI: one-line errors for every way a request can fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from service.cli import CliError
from service.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])


def default_api_url() -> str:
    settings = get_settings()
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def api_options(command: F) -> F:
    """Adds --api-url (HARDLABEL_API_URL) and --token (HARDLABEL_TOKEN) to a command."""
    command = click.option(
        "--token",
        envvar="HARDLABEL_TOKEN",
        default=None,
        show_envvar=True,
        help="API token (from `hardlabel token create` or `hardlabel up`).",
    )(command)
    return click.option(
        "--api-url",
        envvar="HARDLABEL_API_URL",
        default=None,
        show_envvar=True,
        help="Base URL of the API (default: http://HARDLABEL_HOST:HARDLABEL_PORT).",
    )(command)


def describe_problem(response: httpx.Response) -> str:
    """One line from an RFC 9457 problem (or whatever the server sent)."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code}: {response.text.strip()[:200] or response.reason_phrase}"
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {response.status_code}")
    errors = problem.get("errors") or []
    if errors and isinstance(errors[0], dict) and errors[0].get("field") and errors[0]["field"] not in detail:
        detail = f"{errors[0]['field']}: {detail}"
    return detail.replace("\n", " ")


class ApiClient:
    """A thin httpx client for the v1 API. Every failure becomes a CliError with one line."""

    def __init__(
        self,
        api_url: str | None,
        token: str | None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (api_url or default_api_url()).rstrip("/")
        if not token:
            raise CliError(
                "no API token: pass --token or set HARDLABEL_TOKEN "
                "(create one with `hardlabel token create --role admin`)"
            )
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "hardlabel-cli"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = str(exc) or exc.__class__.__name__
            raise CliError(
                f"cannot reach the API at {self.base_url}: {reason} "
                "(is `hardlabel up` or `hardlabel serve` running?)"
            ) from exc
        _raise_for_problem(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers).json()

    def download(
        self,
        path: str,
        dest: Path,
        *,
        params: dict[str, Any] | None = None,
        on_start: Callable[[int | None], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> httpx.Headers:
        """Stream a response body into `dest`; returns its headers. `on_start(total_bytes or None)`
        runs when the headers arrive, `on_bytes(n)` per chunk written."""
        # The server may take minutes to build a large export before its first byte: no read timeout.
        timeout = httpx.Timeout(self._client.timeout.connect, read=None)
        try:
            with self._client.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_problem(response)
                length = response.headers.get("content-length")
                if on_start is not None:
                    on_start(int(length) if length and length.isdigit() else None)
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                return response.headers
        except httpx.TransportError as exc:
            reason = str(exc) or exc.__class__.__name__
            raise CliError(f"download from {self.base_url} broke off: {reason}") from exc


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code == 401:
        raise CliError(f"the API refused the token: {describe_problem(response)}")
    if response.status_code >= 400:
        raise CliError(describe_problem(response))
