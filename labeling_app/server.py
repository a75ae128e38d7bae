"""The labelling app as an ASGI app: Streamlit's pages (``app.py``) plus the two session cookie routes.

``python -m labeling_app`` runs ``streamlit run labeling_app/server.py``; Streamlit finds ``app`` (an
``st.App``) and serves it with uvicorn. A Streamlit page cannot set a cookie, so after a sign-in the
page hands a one-time claim code to the browser (``ui.browser_session_script``), whose script posts
it here:

- ``POST /_rlhf/session/claim`` (body: the claim code): 204 with ``Set-Cookie: <name>=<token>;
  HttpOnly; SameSite=Strict; Path=/; Max-Age=<label.session_hours>`` (and ``Secure`` over https);
  403 for an unknown, used or expired code (``db.claim_session``).
- ``POST /_rlhf/session/clear``: 204, the cookie expired (sign-out; the page revokes the session itself).

Both refuse (403) a request whose ``Origin`` is not this server's ``Host`` (a cross-site post). The
cookie's name is per database (``runtime.session_cookie_name``). At start-up ``RLHF_SESSION_COOKIES=1``
tells the pages that these routes exist.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from labeling_app import runtime  # noqa: E402

APP = Path(__file__).resolve().parent / "app.py"
MAX_BODY = 256  # bytes: a claim code is 43 characters


def same_origin(request: Request) -> bool:
    """Whether the request comes from a page of this server: its ``Origin`` names the ``Host`` it was sent
    to (browsers send ``Origin`` with every POST), and ``Sec-Fetch-Site``, when sent, says same-origin."""
    origin, host = request.headers.get("origin"), request.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
        return False
    return request.headers.get("sec-fetch-site", "same-origin") == "same-origin"


async def _small_body(request: Request) -> bytes | None:
    """The request's body, or None when it is longer than ``MAX_BODY`` (read no further)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return body


def session_routes(get_engine: Callable[[], object], cookie_name: str, ttl_s: Callable[[], float]) -> list[Route]:
    """The claim and clear routes for the database ``get_engine()`` (called in a worker thread), setting
    the cookie ``cookie_name`` for ``ttl_s()`` seconds."""
    import db

    def _cookie(response: Response, request: Request, value: str, max_age: int) -> None:
        response.set_cookie(
            cookie_name,
            value,
            max_age=max_age,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.headers["Cache-Control"] = "no-store"

    async def claim(request: Request) -> Response:
        if not same_origin(request):
            return Response(status_code=403)
        body = await _small_body(request)
        code = body.decode("utf-8", "replace").strip() if body else ""
        if not code:
            return Response(status_code=403)
        token = await run_in_threadpool(lambda: db.claim_session(get_engine(), code))
        if token is None:
            return Response(status_code=403)
        response = Response(status_code=204)
        _cookie(response, request, token, max(1, int(ttl_s())))
        return response

    async def clear(request: Request) -> Response:
        if not same_origin(request):
            return Response(status_code=403)
        response = Response(status_code=204)
        _cookie(response, request, "", 0)
        return response

    return [Route(runtime.CLAIM_ROUTE, claim, methods=["POST"]), Route(runtime.CLEAR_ROUTE, clear, methods=["POST"])]


_engine_lock = threading.Lock()
_engine = None


def _get_engine():
    """One engine for the routes (the pages keep their own, ``ui.get_engine``)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            import db
            from common.paths import db_url

            _engine = db.connect(db_url())
        return _engine


def _ttl_s() -> float:
    """``label.session_hours`` of the profile, in seconds (read at each claim: a changed profile counts)."""
    from common.config import load_config
    from labeling_app.config import LabelConfig

    return load_config(LabelConfig, "label").session_hours * 3600


def _cookie_name() -> str:
    from common.errors import UserError
    from common.paths import db_url

    try:
        return runtime.session_cookie_name(db_url())
    except UserError:  # the pages show what is wrong with RLHF_DB_URL; the routes have nothing to serve
        return runtime.session_cookie_name(os.environ.get("RLHF_DB_URL", ""))


@contextlib.asynccontextmanager
async def _serving(_app):
    """At start-up: tell the pages (run in this process) that the cookie routes exist. (Not at import, so
    that importing this module, as the tests do, changes nothing for AppTest runs.)"""
    os.environ[runtime.SESSION_COOKIES_ENV] = "1"
    yield None


app = st.App(APP, routes=session_routes(_get_engine, _cookie_name(), _ttl_s), lifespan=_serving)
