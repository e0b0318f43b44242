"""Who may use the hub, and proof that a state-changing request comes from the hub's own pages.

- Without a token the hub listens on a loopback address only (`launch hub` refuses any other host) and answers
  only requests addressed to a loopback name (a DNS-rebound name is refused), so only this machine reaches it.
- With a token every request but the login form needs it: `Authorization: Bearer <token>` (scripts), or the
  session cookie the login form sets (HttpOnly, SameSite=Strict; it holds an HMAC of the token, not the token).
- Every POST needs the `X-Spottrain-CSRF` header (a page sends the value of the `spottrain_csrf` cookie, which
  must then match: double submit; pages read it from their <meta>); a cross-site page can send no custom
  header without a CORS preflight, which the hub never grants.
  A request carrying an `Origin`/`Referer` of another origin, or `Sec-Fetch-Site: cross-site`, is refused, and
  so is a stream (server-sent events) opened from another origin. A bearer request is no CSRF risk: a browser
  never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

SESSION_COOKIE = "spottrain_session"
CSRF_COOKIE = "spottrain_csrf"
CSRF_HEADER = "X-Spottrain-CSRF"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
PUBLIC_PATHS = ("/login",)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"spottrain-hub-session", hashlib.sha256).hexdigest()


def token_ok(token: str, given: Optional[str]) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(request: Request) -> Optional[str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authenticated(request: Request, token: Optional[str]) -> bool:
    if token is None:
        return True
    if token_ok(token, _bearer(request)):
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def same_origin(request: Request) -> bool:
    """No Origin/Referer of another origin, and not marked cross-site by the browser."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    ours = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return origin == ours
    if origin == "null":
        return False
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == ours
    return True


def csrf_ok(request: Request, token: Optional[str]) -> bool:
    if token is not None and token_ok(token, _bearer(request)):
        return True
    header = request.headers.get(CSRF_HEADER)
    if not header:
        return False
    cookie = request.cookies.get(CSRF_COOKIE)
    return cookie is None or hmac.compare_digest(cookie.encode(), header.encode())


def is_stream(path: str) -> bool:
    return path == "/api/events" or (path.startswith("/api/runs/") and path.endswith("/events"))


def refusal(request: Request, status: int, message: str, login_page=None) -> Response:
    if status == 401 and login_page is not None and not request.url.path.startswith("/api/"):
        return login_page(request, status_code=401)
    return JSONResponse({"error": message}, status_code=status)


def local_target(path: str) -> str:
    """Where signing in may return to: a path of this hub (not another site's `//host` or `https://`, nor the
    login form itself), else the runs page."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    if urlsplit(path).path in PUBLIC_PATHS:
        return "/"
    return path


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def install(app, token: Optional[str], login_page) -> None:
    """The guard every request passes, and the CSRF cookie every page gets."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.url.hostname or "").lower()
        if token is None and not is_loopback(host):
            return refusal(request, 403, f"host {host!r} refused: without a token the hub answers only to "
                                         f"127.0.0.1 and localhost")
        path = request.url.path
        if path not in PUBLIC_PATHS and not authenticated(request, token):
            return refusal(request, 401, "sign in: send Authorization: Bearer <token> or use /login", login_page)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if not same_origin(request):
                return refusal(request, 403, "cross-origin request refused")
            if path not in PUBLIC_PATHS and not csrf_ok(request, token):
                return refusal(request, 403, f"missing or wrong {CSRF_HEADER} header (CSRF protection)")
        elif is_stream(path) and not same_origin(request):
            return refusal(request, 403, "cross-origin stream refused")
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        request.state.csrf = csrf
        response = await call_next(request)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response
