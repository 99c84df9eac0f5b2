"""The safety rules of the HTTP API and the dashboard: one ASGI middleware, `Guard`,
in front of every route, whether the app runs alone (``aiojobs-redis dashboard``) or is
mounted in a host app.

In this order, a request is refused when:

1. its ``Host`` is not one this app answers to (400 ``bad_host``): on a connection to a
   loopback address, only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) and
   the ``allowed_hosts`` are; with ``allowed_hosts``, on any connection. A web page that
   rebinds its own DNS name to 127.0.0.1 sends its own name as ``Host``: it is refused;
2. it has ``token`` in its query string (400 ``token_in_url``): a secret in a URL lands
   in access logs, proxies and the browser's history. The page takes the token in the
   URL's fragment (``/#token=...``), which a browser never sends, and sends it as
   ``Authorization: Bearer``;
3. ``token`` is set and the request lacks ``Authorization: Bearer <token>`` (401), except
   for loading the page itself (static; it holds no data);
4. ``auth`` (the host app's check) refuses it (401, or the ``HTTPException`` it raised);
5. it changes something (POST, PUT, PATCH, DELETE) and ``read_only`` is set (403
   ``read_only``), or it comes from another origin: an ``Origin`` header that is not
   this host, or ``null`` (403 ``cross_origin``): a page elsewhere cannot make your
   browser retry or delete jobs.

:func:`make_policy` refuses to build an app that nothing protects unless asked to in
so many words (``insecure_open=True``).
"""

from __future__ import annotations

import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import ConfigurationError

AuthCheck = Callable[[Request], Awaitable[bool] | bool]

MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PAGE_PATH: Final = "/"  # the dashboard page: static, served without the token
MIN_TOKEN_LENGTH: Final = 8

_json = msgspec.json.Encoder(enc_hook=repr)


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _json.encode(content)


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> Json:
    return Json({"error": {"status": status, "code": code, "message": message}}, status,
                headers=dict(headers or {}))


def route_path(scope: Scope) -> str:
    """The request's path below the app's root (``root_path``: a mount point, or
    uvicorn's ``--root-path``), percent-decoded, as Starlette routes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):]
    return path


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``; brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The host name of a ``Host`` header (lower case, no port, no brackets), or None
    when there is none or it is not a host."""
    if not header or any(c in header for c in "/?#@\\ "):
        return None
    try:
        name = urlsplit("//" + header).hostname
    except ValueError:
        return None
    return name or None


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may use an app and how (see :func:`make_policy`)."""

    token: str | None
    auth: AuthCheck | None
    read_only: bool
    insecure_open: bool
    allowed_hosts: frozenset[str] | None  # None: only loopback names, on loopback
    any_host: bool  # allowed_hosts included "*"


def make_policy(*, token: str | None, auth: AuthCheck | None, read_only: bool,
                insecure_open: bool, allowed_hosts: Iterable[str] | None) -> Policy:
    """Check the safety arguments of ``create_app``; raise ConfigurationError when they
    are wrong, contradict each other, or leave the app open without saying so."""
    if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH):
        raise ConfigurationError(
            f"token must be a string of at least {MIN_TOKEN_LENGTH} characters")
    if auth is not None and not callable(auth):
        raise ConfigurationError("auth must be a callable: (request) -> bool, sync or async")
    if insecure_open and (token is not None or auth is not None):
        raise ConfigurationError("insecure_open=True contradicts token= and auth=: give one")
    if token is None and auth is None and not read_only and not insecure_open:
        raise ConfigurationError(
            "create_app: say who may use this app. Anyone who reaches it could retry, remove"
            " and pause jobs and read their arguments. Give token=... (a bearer token),"
            " auth=... (your own check of each request), read_only=True (no changes; job"
            " arguments, results and errors are still shown), or insecure_open=True (no"
            " protection but the Host and Origin checks: a process-local or loopback-only"
            " deployment)")
    hosts: frozenset[str] | None = None
    if allowed_hosts is not None:
        if isinstance(allowed_hosts, str | bytes):
            raise ConfigurationError("allowed_hosts must be a list of host names, not a string")
        names = list(allowed_hosts)
        if not names or not all(isinstance(h, str) and h.strip() for h in names):
            raise ConfigurationError("allowed_hosts must be a non-empty list of host names")
        normalized = set()
        for name in names:
            if name == "*":
                normalized.add("*")
                continue
            host = host_name(name.strip())
            if host is None:
                raise ConfigurationError(f"allowed_hosts: {name!r} is not a host name")
            normalized.add(host)
        hosts = frozenset(normalized)
    return Policy(token=token, auth=auth, read_only=read_only, insecure_open=insecure_open,
                  allowed_hosts=hosts, any_host=hosts is not None and "*" in hosts)


def on_loopback(scope: Scope) -> bool:
    """Whether the request came in on a loopback address of this server (the local end
    of the connection, as the ASGI server reports it)."""
    server = scope.get("server")
    return server is not None and isinstance(server[0], str) and is_loopback(server[0])


class Guard:
    """The ASGI middleware that applies a :class:`Policy` before any route (see the
    module's text for the rules and their order)."""

    def __init__(self, app: ASGIApp, *, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denied = await self.check(Request(scope))
        if denied is not None:
            await denied(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def host_allowed(self, request: Request) -> bool:
        p = self.policy
        if p.any_host or (p.allowed_hosts is None and not on_loopback(request.scope)):
            return True
        name = host_name(request.headers.get("host", ""))
        if name is None:
            return False
        return is_loopback(name) or (p.allowed_hosts is not None and name in p.allowed_hosts)

    async def check(self, request: Request) -> Response | None:
        p = self.policy
        if not self.host_allowed(request):
            return error_response(
                400, "bad_host",
                f"this app does not answer to Host {request.headers.get('host', '')!r}"
                " (allowed: loopback names" + (", " + ", ".join(sorted(p.allowed_hosts))
                                               if p.allowed_hosts else "") + ")")
        if "token" in request.query_params:
            return error_response(
                400, "token_in_url",
                "never put the token in a query string: it would be written to access logs."
                " Send 'Authorization: Bearer <token>', or open the page as .../#token=<token>"
                " (a URL fragment is never sent to the server)")
        if p.token is not None and not self.is_page(request):
            given = ""
            header = request.headers.get("authorization", "")
            if header[:7].lower() == "bearer ":
                given = header[7:].strip()
            if not secrets.compare_digest(given.encode(), p.token.encode()):
                return error_response(401, "unauthorized", "a valid bearer token is required",
                                      {"WWW-Authenticate": 'Bearer realm="aiojobs_redis"'})
        if p.auth is not None:
            try:
                allowed = p.auth(request)
                if inspect.isawaitable(allowed):
                    allowed = await allowed
            except HTTPException as e:
                return error_response(e.status_code, "unauthorized" if e.status_code == 401
                                      else "forbidden", str(e.detail), e.headers)
            if not allowed:
                return error_response(401, "unauthorized", "the host application's auth refused")
        if request.method in MUTATING:
            if p.read_only:
                return error_response(403, "read_only", "this dashboard is read-only")
            origin = request.headers.get("origin")
            if origin == "null":
                return error_response(403, "cross_origin", "opaque origins may not change jobs")
            if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
                return error_response(403, "cross_origin",
                                      f"a request from origin {origin!r} may not change jobs")
        return None

    @staticmethod
    def is_page(request: Request) -> bool:
        return request.method in ("GET", "HEAD") and route_path(request.scope) == PAGE_PATH
