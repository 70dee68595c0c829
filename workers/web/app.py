"""The web dyno (``outdial web``): admin API, Retell webhooks, health, metrics and the dashboard.

One aiohttp application (:func:`create_app`) on ``PORT`` (Heroku sets it; ``--port`` overrides).
Blocking work (pymongo, redis-py) runs in thread pools so the event loop only parses requests and
writes answers: one pool for admin and dashboard reads and writes, one for contact imports, one
for webhooks (so a burst of admin traffic never delays Retell's 10-second deadline).

Routes and who may call them (docs/web.md has every detail):

=====================================  ========  ==================================================
route                                  access    what
=====================================  ========  ==================================================
``GET /healthz``                       public    the process is up
``GET /readyz``                        public    MongoDB and Redis answer (503 otherwise)
``GET /openapi.json``                  public    the OpenAPI 3 document of every route
``POST /webhooks/retell``              signed    Retell's call events (``x-retell-signature``)
``GET /metrics``                       read      Prometheus text: this process, the workers, gauges
``GET /``, ``/dashboard/batches``,     read      the dashboard and its wizard (session cookie or bearer token)
``GET /campaigns/new``
``/call-settings/...``,                read      call_settings schema and preview, contacts check (write nothing)
``POST /contacts/check``
``/dashboard/batches/{id}``,          read      a batch's results page, its export (CSV, JSON lines), the
``/batches/{id}/results.*``,                     account's result webhook deliveries
``GET .../webhook-deliveries``
``/accounts/...``, ``/batches/...``,   admin     the admin API (``Authorization: Bearer <ADMIN_TOKEN>``, or the
``/jobs/...``                                    admin session cookie with its ``X-CSRF-Token``)
=====================================  ========  ==================================================
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis as redis_lib
from aiohttp import web
from pymongo.errors import PyMongoError

from shared import metrics
from shared.config import Config, get_config
from shared.errors import Conflict, NotFound, ServiceError, ValidationError
from shared.logs import configure_from, event, get_logger, register_secret
from shared.pipeline.timing import DEFAULT_MAX_CLOCK_AGE_S
from workers.web.context import CONTEXT, WebContext, WebSettings, context
from workers.web.http import (
    ADMIN,
    ADMIN_SESSION,
    ADMIN_SESSION_COOKIE,
    CLIENT_CLOSED,
    PUBLIC,
    READ,
    SESSION_COOKIE,
    ApiError,
    access,
    access_of,
    admin_session,
    admin_session_id,
    bearer,
    check_query,
    csrf_ok,
    invalid,
    json_response,
    open_admin_session,
    read_token_for,
    same_token,
    unauthorized,
)

log = get_logger(__name__)

#: Seconds a stopping web dyno lets requests in progress finish (Heroku sends SIGKILL 30 s after SIGTERM).
DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0
#: Default listening address.
DEFAULT_HOST = "0.0.0.0"
#: Admin tokens shorter than this are accepted but logged as weak, characters.
WEAK_TOKEN_LENGTH = 16


# -- middleware ----------------------------------------------------------------------------------------


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """Count every request by route, method and status, and time it."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = _route_label(request)
        metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


def _http_error(exc: web.HTTPException) -> ApiError:
    code = exc.reason.lower().replace(" ", "_") if exc.reason else "error"
    message = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status, exc.reason or "error")
    if exc.status == 413:
        message = "the request body is too large"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return ApiError(exc.status, code, message, headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Turn every failure into the common error shape (see :mod:`workers.web.http`)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except ValidationError as exc:
        return invalid([(str(f), str(m)) for f, m in exc.errors]).response()
    except NotFound as exc:
        return ApiError(404, "not_found", str(exc)).response()
    except Conflict as exc:
        return ApiError(409, "conflict", str(exc)).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc).response()
    except (ServiceError, PyMongoError, redis_lib.RedisError, TimeoutError) as exc:
        event(log, "service_unavailable", level=logging.ERROR, route=_route_label(request),
              error=type(exc).__name__, detail=str(exc)[:200])
        return ApiError(503, "service_unavailable",
                        f"a backing service failed ({type(exc).__name__}); try again",
                        headers={"Retry-After": "5"}).response()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if client_gone(request, exc):
            event(log, "client_disconnected", route=_route_label(request), method=request.method, status=CLIENT_CLOSED,
                  error=type(exc).__name__)
            # Counted under 499 by ``observe``; aiohttp drops the answer quietly, the connection being closed.
            return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
        log.exception("request_failed", extra={"route": _route_label(request), "error": type(exc).__name__})
        return ApiError(500, "internal_error", "unexpected error; it has been logged").response()


def client_gone(request: web.Request, exc: BaseException) -> bool:
    """True when ``exc`` is the request's own connection closing under it (the client went away while its body was
    being read): not a failure of the server, logged once as :data:`CLIENT_CLOSED` and never counted as a 500."""
    if not isinstance(exc, ConnectionError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def authorize(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    """Enforce each route's access level (``outdial_access`` on the handler)."""
    if request.match_info.http_exception is not None:
        return await handler(request)
    level = access_of(request)
    if level == PUBLIC:
        return await handler(request)
    ctx = context(request)
    token = bearer(request)
    allowed = same_token(token, ctx.admin_token) or (level == READ and same_token(token, ctx.read_token))
    if not allowed:
        cookie = admin_session(request, ctx.admin_token)
        if cookie is not None:
            # Open until signed out, on any dyno. Redis not answering raises here: 503, the session refused
            # (fail closed), never accepted unchecked.
            if not await ctx.run(ctx.runtime.admin_sessions.is_open, admin_session_id(cookie)):
                return _signed_out(request, ctx)
            request[ADMIN_SESSION] = cookie
        if level == READ:
            allowed = (open_admin_session(request) is not None
                       or same_token(request.cookies.get(SESSION_COOKIE), ctx.read_token))
        elif level == ADMIN and token is None:
            # The dashboard's wizard: the admin session cookie counts only with its CSRF token in a header,
            # which another site can neither read nor send.
            allowed = csrf_ok(request, ctx.admin_token)
    if allowed:
        if level == ADMIN or hasattr(request.match_info.handler, "outdial_query"):
            check_query(request)
        return await handler(request)
    if getattr(request.match_info.handler, "outdial_html", False):
        from workers.web.dashboard import see_other

        return see_other("/login")
    raise unauthorized(ctx.admin_token)


def _signed_out(request: web.Request, ctx: WebContext) -> web.StreamResponse:
    """The answer to a request made with an admin session that was signed out: every page of that session is signed
    out too (its next call gets 401, a page goes to the login), whatever other cookie it carries; the stale cookie
    is dropped."""
    if getattr(request.match_info.handler, "outdial_html", False):
        from workers.web.dashboard import see_other

        response: web.StreamResponse = see_other("/login")
    else:
        error = unauthorized(ctx.admin_token)
        error.message = "this admin session has been signed out: sign in again"
        error.errors = [(None, error.message)]
        response = error.response()
    response.del_cookie(ADMIN_SESSION_COOKIE, path="/")
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


# -- operations routes ---------------------------------------------------------------------------------


@access(PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _check(fn: Callable[[], Any], timeout_s: float) -> str:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, fn), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - readiness reports the failure, it does not raise it
        return f"error: {type(exc).__name__}"
    return "ok"


def _clock_check(ctx: WebContext) -> None:
    """Raise unless this process knows the shared (Redis) time within ``PIPELINE_MAX_SKEW_MS``."""
    server_time = getattr(ctx.runtime, "server_time", None)
    if server_time is None:
        return
    limit_s = ctx.runtime.config.pipeline_max_skew_ms / 1000
    if not server_time.trusted(max_uncertainty_s=limit_s, max_age_s=DEFAULT_MAX_CLOCK_AGE_S):
        raise ClockUnknown(f"shared time unknown within {limit_s:g} s")


class ClockUnknown(Exception):
    """The process cannot tell the shared time closely enough (readiness reports it)."""


@access(PUBLIC)
async def readyz(request: web.Request) -> web.Response:
    ctx = context(request)
    timeout = ctx.settings.ready_timeout_s
    mongodb, redis, clock = await asyncio.gather(_check(lambda: ctx.runtime.db.command("ping"), timeout),
                                                 _check(ctx.runtime.redis.ping, timeout),
                                                 _check(lambda: _clock_check(ctx), timeout))
    checks = {"mongodb": mongodb, "redis": redis, "clock": clock}
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        event(log, "not_ready", level=logging.WARNING, **checks)
    return json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                         status=200 if ready else 503)


@access(READ)
async def metrics_route(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await ctx.metrics.render(ctx.run)
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = ctx.metrics.content_type
    return response


@access(PUBLIC)
async def openapi_route(request: web.Request) -> web.Response:
    from workers.web.openapi import document

    return json_response(document())


def routes() -> list[tuple[str, str, Any, str]]:
    """``(method, path, handler, name)`` of every route of the application."""
    from workers.web import admin, call_settings, compliance, dashboard, dnc, result_hooks, results
    from workers.web.webhooks import retell_webhook

    return [
        ("GET", "/healthz", healthz, "healthz"),
        ("GET", "/readyz", readyz, "readyz"),
        ("GET", "/metrics", metrics_route, "metrics"),
        ("GET", "/openapi.json", openapi_route, "openapi"),
        ("POST", "/webhooks/retell", retell_webhook, "retell_webhook"),
        *admin.ROUTES,
        *dnc.ROUTES,
        *result_hooks.ROUTES,
        *results.ROUTES,
        *call_settings.ROUTES,
        *compliance.ROUTES,
        *dashboard.routes(),
    ]


# -- the application -----------------------------------------------------------------------------------


def _pipeline_source(pipeline: Any, runtime: Any) -> Callable[[], Any]:
    if pipeline is None:
        return lambda: runtime.process_pipeline
    if callable(pipeline) and not hasattr(pipeline, "finalize"):
        return pipeline
    return lambda: pipeline


def create_app(runtime: Any = None, *, pipeline: Any = None, settings: WebSettings | None = None,
               config: Config | None = None) -> web.Application:
    """The web application.

    :param runtime: the process's runtime; default :func:`workers.runtime.get_runtime`.
    :param pipeline: a :class:`shared.pipeline.Pipeline`, or a function returning one; default
        the runtime's :attr:`~workers.runtime.Runtime.process_pipeline` (built on the first webhook).
    :param settings: default :meth:`WebSettings.from_config` of ``config``.
    :param config: default the runtime's configuration.
    """
    if runtime is None:
        from workers.runtime import get_runtime

        runtime = get_runtime()
    config = config or runtime.config
    settings = settings or WebSettings.from_config(config)
    register_secret(settings.admin_token)
    register_secret(read_token_for(settings.admin_token))
    register_secret(settings.webhook_api_key)
    app = web.Application(middlewares=[observe, errors, authorize],
                          client_max_size=max(settings.max_json_bytes, settings.max_contacts_json_bytes,
                                              settings.max_webhook_bytes))
    app[CONTEXT] = WebContext(runtime=runtime, settings=settings, pipeline=_pipeline_source(pipeline, runtime))
    for method, path, handler, name in routes():
        app.router.add_route(method, path, handler, name=name)
    app.on_response_prepare.append(_security_headers)
    if settings.start_cache_listener:
        from workers.middleware import cache_listener_ctx

        app.cleanup_ctx.append(cache_listener_ctx)
    if settings.publish_metrics:
        app.cleanup_ctx.append(_metrics_publisher)
    app.on_cleanup.append(_close_context)
    return app


async def _metrics_publisher(app: web.Application) -> AsyncIterator[None]:
    from shared.metrics import SnapshotPublisher

    publisher = SnapshotPublisher(app[CONTEXT].runtime.redis)
    publisher.start()
    try:
        yield
    finally:
        await asyncio.get_running_loop().run_in_executor(None, publisher.stop)


async def _close_context(app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, app[CONTEXT].close)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outdial web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default PORT, else 8000)")
    parser.add_argument("--print-read-token", action="store_true",
                        help="print the read-only token (dashboard, /metrics) derived from ADMIN_TOKEN and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``outdial web``: serve the application until SIGTERM/SIGINT."""
    args = _parser().parse_args(list(argv or []))
    config = get_config()
    if args.print_read_token:
        token = read_token_for(config.admin_token)
        if token is None:
            print("outdial web: ADMIN_TOKEN is not set", flush=True)
            return 2
        print(token, flush=True)
        return 0
    configure_from(config)
    config.check_deployment()
    port = args.port or config.port
    if not config.admin_token:
        event(log, "admin_token_unset", level=logging.WARNING,
              effect="the admin API, dashboard and /metrics refuse every request")
    elif len(config.admin_token) < WEAK_TOKEN_LENGTH:
        event(log, "admin_token_weak", level=logging.WARNING, length=len(config.admin_token),
              advice=f"use at least {WEAK_TOKEN_LENGTH} random characters")
    app = create_app()
    # Everything loaded so far (modules, phone metadata, settings) lives as long as the process: keep it out of
    # the collector's full passes, which otherwise stop the event loop for 100-200 ms (measured under load with
    # 66,000 such objects; 1-9 ms once they are frozen) and delay every request in flight.
    gc.collect()
    gc.freeze()
    event(log, "web_listening", host=args.host, port=port)
    web.run_app(app, host=args.host, port=port, access_log=None, print=None,
                shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT_S, handle_signals=True)
    return 0
