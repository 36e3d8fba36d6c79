"""The gateway's edge: who calls (client IP, API key), may they (rate limit), what happened
(metrics, access log), what is still running (graceful drain), and CORS.

``Edge.wrap`` wraps the /v1 handlers at route registration, so the request
path gains one coroutine frame and a handful of attribute operations; nothing
runs for a feature that is off (no ``rateLimit``: no limiter call; no
``apiKeys``: no header read). Per-attempt facts (backend, model, time spent
waiting on the backend, tokens, errors, attempts) are reported by the request path
(serving.py) to the request's ``Record``, which this module creates and hands over on
the request (``request[RECORD]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from chromagent_proxy.backends.registry import genai_provider_name
from chromagent_proxy.core.config import GatewayConfig
from chromagent_proxy.core.errors import (
    AuthenticationFailed,
    ConfigError,
    GatewayError,
    RateLimited,
    ServiceUnavailable,
)
from chromagent_proxy.ops.accesslog import AccessLine, AccessLog, iso_time, millis
from chromagent_proxy.ops.genai import OPERATIONS, request_error_type
from chromagent_proxy.ops.instrument import RECORD, Record
from chromagent_proxy.ops.metrics import SNAPSHOT_DIR_ENV, Metrics
from chromagent_proxy.ops.metrics_render import render_json, render_text
from chromagent_proxy.ops.originguard import OriginGuard
from chromagent_proxy.ops.ratelimit import Decision, build_limiter
from chromagent_proxy.ops.tracing import build as build_tracing
from chromagent_proxy.routing.router import Router
from chromagent_proxy.service.cors import setup_cors
from chromagent_proxy.service.handlers import error_response
from chromagent_proxy.service.serving import request_id

log = logging.getLogger("chromagent_proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRender = Callable[[GatewayError, str, Mapping[str, str] | None], web.Response]
perf = time.perf_counter


class Edge:
    def __init__(self, config: GatewayConfig, metrics: Metrics | None = None) -> None:
        rl = config.rate_limit
        try:
            self.limiter = build_limiter(rl)
        except ValueError as exc:
            raise ConfigError(f"config $.rateLimit.redisUrl: {exc}") from None
        self.fail_open = rl.fail_open if rl is not None else True
        self.per_key_max = rl.per_key_max if rl is not None else None
        self._keys = [k.encode() for k in config.api_keys if k]
        # Per-key limits are keyed by a digest, so no secret ever lands in Redis or memory keys.
        self._key_ids = [hashlib.sha256(k).hexdigest()[:16] for k in self._keys]
        self._trusted_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for i, entry in enumerate(rl.trusted_proxies if rl is not None else []):
            try:
                self._trusted_nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"config $.rateLimit.trustedProxies[{i}]: {entry!r} is not an IP address "
                    "or CIDR range"
                ) from None
        self._trusted_cache: dict[str, bool] = {}
        self.origins = OriginGuard(config)
        self.metrics = metrics or Metrics(os.environ.get(SNAPSHOT_DIR_ENV))
        self.access = AccessLog()
        self.shutdown_timeout = config.shutdown_timeout_ms / 1000
        self.inflight = 0
        self.streams: set[Record] = set()
        self.draining = False
        self._idle_event: asyncio.Event | None = None
        # Process-wide and read at start only: a hot reload does not switch tracing.
        self.tracing = build_tracing(config.tracing)

    # -- who is calling ----------------------------------------------------------------

    def _is_trusted(self, ip: str) -> bool:
        hit = self._trusted_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self._trusted_nets)
            except ValueError:
                hit = False
            if len(self._trusted_cache) > 10_000:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = hit
        return hit

    def client_ip(self, request: web.Request) -> str:
        """The peer address; behind trusted proxies, the first untrusted X-Forwarded-For hop."""
        peer = request.remote or ""
        if not self._trusted_nets or not self._is_trusted(peer):
            return peer
        # A proxy may add its own header line instead of appending to the client's: all
        # lines, in order, form one list (RFC 9110 §5.3), else the client's line would win.
        lines = request.headers.getall("X-Forwarded-For", ())
        if not lines:
            return peer
        hops = [h.strip() for h in ",".join(lines).split(",")]
        # Right to left: each trusted proxy appended the address it saw.
        for hop in reversed(hops):
            if hop and not self._is_trusted(hop):
                return hop[:64]
        return next((h for h in hops if h), peer)[:64]

    def _key_index(self, request: web.Request) -> int:
        # Authorization: Bearer (OpenAI SDKs, ANTHROPIC_AUTH_TOKEN) or x-api-key (Anthropic SDKs).
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip().encode()
        else:
            token = request.headers.get("x-api-key", "").strip().encode()
            if not token:
                return -1
        found = -1
        # Every key is compared (constant time each), so timing says nothing about which matched.
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(key, token):
                found = i
        return found

    async def _admit(
        self, request: web.Request, rec: Record, render: ErrorRender
    ) -> web.Response | None:
        """None to go on, or the 429 / 401 / 503 response (in the dialect ``render`` speaks)."""
        limiter = self.limiter
        if limiter is not None:
            rec.ip = ip = self.client_ip(request)
            d = await limiter.hit("ip:" + ip)
            refused = self._apply(rec, d, render)
            if refused is not None:
                return refused(request)
        if self._keys:
            idx = self._key_index(request)
            if idx < 0:
                self.metrics.auth_failures += 1
                return render(
                    AuthenticationFailed(
                        "Missing or invalid API key: send 'Authorization: Bearer <key>' (or "
                        "'x-api-key: <key>') with one of the gateway's apiKeys.",
                        headers={"WWW-Authenticate": "Bearer"},
                    ),
                    request_id(request),
                    None,
                )
            if limiter is not None and self.per_key_max:
                d = await limiter.hit("key:" + self._key_ids[idx], self.per_key_max)
                refused = self._apply(rec, d, render)
                if refused is not None:
                    return refused(request)
        return None

    def _apply(
        self, rec: Record, d: Decision, render: ErrorRender
    ) -> Callable[[web.Request], web.Response] | None:
        if d.unavailable:
            if self.fail_open:
                return None
            return lambda request: render(
                ServiceUnavailable(
                    "The rate limiter's Redis is unreachable and rateLimit.failOpen is false; "
                    "try again shortly.",
                    headers={"Retry-After": "1"},
                ),
                request_id(request),
                None,
            )
        # The tighter of the IP and key budgets is what the client sees.
        if rec.rl is None or not d.allowed or d.remaining < rec.rl.remaining:
            rec.rl = d
        if d.allowed:
            return None
        self.metrics.rate_limited += 1
        return lambda request: render(
            RateLimited(
                f"Rate limit reached: {d.limit} requests per window; retry after "
                f"{d.retry_after_s} s.",
                headers={"Retry-After": str(d.retry_after_s)},
            ),
            request_id(request),
            d.headers(),
        )

    # -- the request path --------------------------------------------------------------

    def wrap(self, handler: Handler, render: ErrorRender = error_response) -> Handler:
        """``render``: how the edge's own 401 / 429 / 503 look (the route's dialect)."""
        guard = self.limiter is not None or bool(self._keys)
        origins = self.origins

        async def guarded(request: web.Request) -> web.StreamResponse:
            rec = Record(perf(), self.metrics, self.streams)
            request[RECORD] = rec
            if self.tracing is not None:
                rec.trace = self.tracing.begin(
                    request.headers, request.method, request.path, OPERATIONS.get(request.path, "")
                )
            self.inflight += 1
            self.metrics.inflight += 1
            resp: web.StreamResponse | None = None
            status = 500
            try:
                refused = origins.refusal(request)  # a page on a foreign origin or host: 403
                if refused is not None:
                    resp = render(refused, request_id(request), None)
                elif guard:
                    resp = await self._admit(request, rec, render)  # a 429 / 401 / 503, or None
                if resp is None:
                    resp = await handler(request)
                if not resp.prepared:
                    if rec.rl is not None:
                        resp.headers.update(rec.rl.headers())
                    if self.draining:
                        resp.force_close()
                return resp
            except web.HTTPException as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = 499  # the client went away (nginx's convention)
                raise
            finally:
                self.inflight -= 1
                self.metrics.inflight -= 1
                if self._idle_event is not None and self.inflight == 0:
                    self._idle_event.set()
                self._finish(request, rec, resp.status if resp is not None else status, resp)

        return guarded

    def _finish(
        self, request: web.Request, rec: Record, status: int, resp: web.StreamResponse | None
    ) -> None:
        end = perf()
        m = self.metrics
        backend = rec.backend or "none"
        model = m.model_label(rec.model)
        ttft = rec.first_at - rec.start if rec.first_at else None
        if rec.attempts:
            # Gateway overhead: time to answer (or to the first chunk) minus time spent in backends.
            overhead: float | None = (rec.first_at or end) - rec.start - rec.upstream_s
        else:
            overhead = None
        if rec.attempts > 1:
            m.failovers += rec.attempts - 1
        if rec.streaming:
            m.active_streams -= 1
        if rec.stream:
            self.streams.discard(rec)
        m.observe(
            backend,
            model,
            status,
            end - rec.start,
            ttft,
            overhead if overhead is None or overhead > 0 else 0.0,
            rec.tokens_in,
            rec.tokens_out,
        )
        operation = OPERATIONS.get(request.path) or ("chat" if rec.attempts else None)
        usage = (rec.tokens_in, rec.tokens_out, rec.cache_read, rec.cache_write, rec.reasoning)
        error_type = request_error_type(status, rec.error_type)
        if operation is not None:
            m.genai.observe(operation, backend, model, error_type, end - rec.start, ttft, usage)
        if rec.trace is not None:
            rec.trace.end(status, error_type, usage)
        if self.access.enabled:
            rid = (resp.headers.get("x-request-id") if resp is not None else None) or (
                request.headers.get("x-request-id") or ""
            )
            self.access.write(
                AccessLine(
                    time=iso_time(time.time()),
                    request_id=rid[:128],
                    client_ip=rec.ip if rec.ip is not None else self.client_ip(request),
                    method=request.method,
                    path=request.path[:256],
                    status=status,
                    backend=rec.backend or None,
                    model=model if rec.model else None,
                    stream=rec.stream,
                    latency_ms=millis(end - rec.start),
                    ttft_ms=millis(ttft) if ttft is not None else None,
                    tokens_in=rec.tokens_in,
                    tokens_out=rec.tokens_out,
                    attempts=rec.attempts,
                    session_id=rec.session,  # Claude Code's session (never a metric label)
                )
            )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Stream responses are prepared inside the handler: add the rate-limit headers there."""
        rec = request.get(RECORD)
        if rec is not None and rec.rl is not None and "x-ratelimit-limit" not in response.headers:
            response.headers.update(rec.rl.headers())

    # -- lifecycle ---------------------------------------------------------------------

    def watch(self, router: Router) -> None:
        """Label metrics with each backend's GenAI provider name, and report which backends
        ``router`` routes around right now (chromagent_backend_cooling)."""
        self.metrics.genai.providers = {
            b.id: genai_provider_name(b.config.type) for b in router.backends.values()
        }
        health, clock = router.health, router.clock
        self.metrics.cooling = lambda: {bid: int(h.until > clock()) for bid, h in health.items()}

    def start(self) -> None:
        self.metrics.start()
        self.access.start()

    async def _idle(self, seconds: float) -> bool:
        """Wait until no request is in flight; False if ``seconds`` pass first."""
        if self.inflight == 0:
            return True
        self._idle_event = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await self._idle_event.wait()
        except TimeoutError:
            return self.inflight == 0
        finally:
            self._idle_event = None
        return True

    async def drain(self) -> None:
        """Wait for in-flight requests; past shutdownTimeoutMs, end open streams with an error
        event (requests that are not streams are cancelled by aiohttp afterwards)."""
        self.draining = True
        if await self._idle(self.shutdown_timeout):
            return
        log.warning(
            "shutdown: %d request(s) still running after %.1f s; ending open streams",
            self.inflight,
            self.shutdown_timeout,
        )
        for rec in list(self.streams):
            if rec.task is not None and not rec.task.done():
                rec.killed = True
                rec.task.cancel()
        await self._idle(2.0)

    async def close(self) -> None:
        if self.tracing is not None:
            await self.tracing.close()  # sends the spans still queued
        await self.metrics.stop()
        await self.access.stop()
        if self.limiter is not None:
            try:
                await self.limiter.close()
            except Exception:
                log.debug("closing the rate limiter failed", exc_info=True)

    # -- /metrics, CORS --------------------------------------------------------------

    async def metrics_handler(self, request: web.Request) -> web.Response:
        refused = self.origins.refusal(request)
        if refused is not None:
            return error_response(refused, request_id(request))
        await self.metrics.refresh()
        merged = self.metrics.merged()
        if "application/json" in request.headers.get("Accept", ""):
            return web.Response(body=render_json(merged), content_type="application/json")
        return web.Response(
            body=render_text(merged),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    def install(self, app: web.Application, config: GatewayConfig, api_paths: list[str]) -> None:
        if self.limiter is not None:
            app.on_response_prepare.append(self.on_prepare)
        if config.cors is not None:
            setup_cors(app, config, api_paths)
            app.on_response_prepare.append(self._cors_prepare)

    async def _cors_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        self.origins.strip_null_origin(response)
