"""What both consoles share: the signed session cookie, CSRF, sign-in and sign-out, the
page layout (Jinja2 templates shipped in this package), the static assets and the
server-sent event helpers for live parts.

A session is an HttpOnly, SameSite=Strict cookie holding who signed in (never the key
itself), when it expires and a random nonce, signed with HMAC-SHA256. The secret comes
from ``CORRAL_CONSOLE_SECRET`` or is drawn at random per process (sessions then end
when the process does, and several workers need the variable). Every form carries a
CSRF token bound to the session (an HMAC of its nonce); the sign-in form, before there
is a session, uses a double-submit cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from corral.gateway.streaming import EventStreamResponse, sse_event

SESSION_COOKIE = "corral_console"
LOGIN_CSRF_COOKIE = "corral_console_login"
SECRET_ENV = "CORRAL_CONSOLE_SECRET"
SESSION_SECONDS = 12 * 3600

Page = Callable[[Request, "ConsoleSession"], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in: ``master`` (the gateway's master key), ``key`` (a virtual key, by
    id) or ``fleet`` (the supervisor's token). Only ``admin`` identities see admin pages."""

    kind: str
    subject: str
    admin: bool
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    identity: Identity
    nonce: str
    expires: float
    csrf: str


def console_secret(environ: Mapping[str, str]) -> bytes:
    """The configured signing secret, or a random one for this process."""
    configured = environ.get(SECRET_ENV, "")
    if configured:
        if len(configured) < 16:
            raise ValueError(f"{SECRET_ENV} must be at least 16 characters")
        return configured.encode()
    return secrets.token_bytes(32)


class SessionSigner:
    def __init__(self, secret: bytes, *, max_age: float = SESSION_SECONDS) -> None:
        self._secret = secret
        self.max_age = max_age

    def _mac(self, purpose: str, data: bytes) -> str:
        digest = hmac.new(self._secret, purpose.encode() + b"\0" + data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, identity: Identity, *, now: float | None = None) -> str:
        body = orjson.dumps({"k": identity.kind, "s": identity.subject, "a": identity.admin, "i": identity.key_id,
                             "n": secrets.token_urlsafe(16), "e": (now or time.time()) + self.max_age})
        payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        return f"{payload}.{self._mac('session', payload.encode())}"

    def read(self, value: str | None, *, now: float | None = None) -> ConsoleSession | None:
        if not value or "." not in value:
            return None
        payload, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", payload.encode())):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            identity = Identity(kind=str(data["k"]), subject=str(data["s"]), admin=bool(data["a"]),
                                key_id=None if data["i"] is None else str(data["i"]))
            nonce, expires = str(data["n"]), float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < (now or time.time()):
            return None
        return ConsoleSession(identity, nonce, expires, self._mac("csrf", nonce.encode()))


class Forbidden(Exception):
    """A signed-in identity asked for a page it may not see (rendered as a 403 page)."""


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    label: str
    admin: bool = False


SignIn = Callable[[str], Awaitable[Identity | None]]
StillValid = Callable[[Identity], bool]


class Site:
    """One console's shell: its name, navigation, how a secret signs in, and whether a
    session's identity is still valid (a key revoked or disabled since ends its sessions)."""

    def __init__(self, *, title: str, nav: list[NavItem], sign_in: SignIn, still_valid: StillValid,
                 signer: SessionSigner, secret_label: str, prefix: str = "/ui") -> None:
        self.title = title
        self.nav = nav
        self.sign_in = sign_in
        self.still_valid = still_valid
        self.signer = signer
        self.secret_label = secret_label
        self.prefix = prefix
        self.templates = Environment(loader=PackageLoader("corral.console", "templates"),
                                     autoescape=select_autoescape(["html"]), enable_async=False)
        self.templates.globals.update(prefix=prefix, site_title=title)

    # ---- sessions and pages -------------------------------------------------------

    def session(self, request: Request) -> ConsoleSession | None:
        found = self.signer.read(request.cookies.get(SESSION_COOKIE))
        if found is None or not self.still_valid(found.identity):
            return None
        return found

    def page(self, handler: Page, *, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session (else a redirect to sign-in), and an admin one if asked."""
        async def run(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
                    return RedirectResponse(f"{self.prefix}/login?next={request.url.path}", 303)
                return self.error(request, None, 401, "Sign in first.")
            if admin and not session.identity.admin:
                return self.error(request, session, 403, "This page needs the master key.")
            try:
                return await handler(request, session)
            except Forbidden as exc:
                return self.error(request, session, 403, str(exc))

        return run

    async def form(self, request: Request, session: ConsoleSession) -> FormData:
        """The posted form, after its CSRF token was checked (`CsrfRefused` otherwise)."""
        form = await request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(token, session.csrf):
            raise CsrfRefused
        return form

    def render(self, request: Request, session: ConsoleSession | None, template: str, *, status: int = 200,
               **context: Any) -> HTMLResponse:
        identity = session.identity if session else None
        nav = [n for n in self.nav if identity is not None and (identity.admin or not n.admin)]
        html = self.templates.get_template(template).render(
            request=request, session=session, identity=identity, nav=nav, path=request.url.path,
            csrf=session.csrf if session else "", **context)
        return HTMLResponse(html, status, headers=PAGE_HEADERS)

    def fragment(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(**context)

    def error(self, request: Request, session: ConsoleSession | None, status: int, message: str) -> HTMLResponse:
        return self.render(request, session, "error.html", status=status, message=message, title=f"{status}")

    # ---- sign-in ----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = self.render(request, None, "login.html", title="Sign in", login_csrf=token,
                               next=_local(request.query_params.get("next")), secret_label=self.secret_label,
                               failed=False)
        self._cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        posted, cookie = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)
        if not isinstance(posted, str) or not cookie or not hmac.compare_digest(posted, cookie):
            return self.error(request, None, 403, "The form expired or was not sent by this console: reload it.")
        secret = form.get("secret")
        identity = await self.sign_in(secret.strip()) if isinstance(secret, str) and secret.strip() else None
        if identity is None:
            token = secrets.token_urlsafe(24)
            page = self.render(request, None, "login.html", status=401, title="Sign in", login_csrf=token,
                                   next=_local(str(form.get("next") or "")), secret_label=self.secret_label,
                                   failed=True)
            self._cookie(request, page, LOGIN_CSRF_COOKIE, token, max_age=3600)
            return page
        response = RedirectResponse(_local(str(form.get("next") or "")) or f"{self.prefix}/", 303)
        self._cookie(request, response, SESSION_COOKIE, self.signer.issue(identity), max_age=int(self.signer.max_age))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=self.prefix)
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session(request)
        if session is not None:
            try:
                await self.form(request, session)
            except CsrfRefused:
                return self.error(request, session, 403, "Missing or wrong CSRF token.")
        response = RedirectResponse(f"{self.prefix}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=self.prefix, httponly=True, samesite="strict")
        return response

    def _cookie(self, request: Request, response: Response, name: str, value: str, *, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=self.prefix, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    def routes(self) -> list[BaseRoute]:
        """Sign-in, sign-out and the static assets."""
        return [
            page_route(f"{self.prefix}/login", self.login_page),
            page_route(f"{self.prefix}/login", self.login, "POST"),
            page_route(f"{self.prefix}/logout", self.logout, "POST"),
            Mount(f"{self.prefix}/static", StaticFiles(packages=[("corral.console", "static")]), name="console-static"),
        ]


def page_route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str = "GET") -> Route:
    """A console route: an HTML page, not API (left out of the OpenAPI document)."""
    return Route(path, endpoint, methods=[method], include_in_schema=False)


class CsrfRefused(Exception):
    pass


PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    # Nothing from elsewhere: scripts, styles and images come from this console only.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
}


def _local(target: str | None) -> str:
    """A redirect target on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return ""
    return target


def csrf_checked(site: Site, handler: Callable[[Request, ConsoleSession, FormData], Awaitable[Response]]) -> Page:
    """A POST page whose form must carry the session's CSRF token (else 403, nothing done)."""
    async def run(request: Request, session: ConsoleSession) -> Response:
        try:
            form = await site.form(request, session)
        except CsrfRefused:
            return site.error(request, session, 403, "Missing or wrong CSRF token: the form was not sent by "
                                                     "this console. Nothing was changed.")
        return await handler(request, session, form)

    return run


HEARTBEAT = ""  # what a live loop yields when it has nothing new: a comment line goes out


def html_events(fragments: AsyncIterator[str]) -> EventStreamResponse:
    """Server-sent ``html`` events (console.js puts them into the page), then ``end``. A
    `HEARTBEAT` becomes an SSE comment: a tab closed without a word is noticed on write."""
    async def body() -> AsyncIterator[bytes]:
        yield b": live\n\n"
        async for html in fragments:
            yield sse_event({"type": "html", "html": html}) if html else b": heartbeat\n\n"
        yield sse_event({"type": "end"})

    return EventStreamResponse(body())


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def process_secret() -> bytes:
    """The signing secret from this process's environment (the factories call this)."""
    return console_secret(os.environ)

