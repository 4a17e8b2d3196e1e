"""Structured JSON logs (access and audit) that never carry a token or a password.

Tokens only ever appear in the Authorization header and in share-link paths; the access log writes neither
(link paths are logged with the token replaced), and a last-resort filter masks anything shaped like a
JWT, a Bearer/Basic credential or a ``password=``/``token=`` pair in any message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_MASKS = (
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)((?:password|passwd|secret|token|access_token)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',]+"), r"\1[redacted]"),
    (re.compile(r"/link/[^/\s]+"), "/link/[redacted]"),
)


def scrub(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker process (gateway.workers)
        }
        for key in ("access", "audit"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str))


def configure(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn's own access log prints raw paths (share-link tokens): ours replaces it
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


_SENSITIVE_QUERY = re.compile(r"(?i)((?:^|&)(?:[a-z_]*token|password|secret|code)=)[^&]*")


def safe_target(path: str, query: bytes) -> str:
    """The request target as it may be logged: link tokens and sensitive query values masked."""
    target = re.sub(r"^/api/link/[^/]+", "/api/link/[redacted]", path)
    if query:
        target += "?" + _SENSITIVE_QUERY.sub(r"\1[redacted]", query.decode("latin-1"))
    return target


class AccessLogMiddleware:
    """One JSON access-log line and the request metrics per HTTP request (pure ASGI: bodies stream through)."""

    def __init__(self, app):
        self.app = app
        self.log = logging.getLogger("kheopsctl.gateway.access")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from kheopsctl.gateway import metrics

        start = time.perf_counter()
        target = safe_target(scope["path"], scope.get("query_string", b""))
        method = scope["method"]
        state = {"status": 500, "sent": 0, "ttfb": None}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["ttfb"] = time.perf_counter() - start
            elif message["type"] == "http.response.body":
                state["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = (scope.get("root_path", "") + route.path) if route is not None and hasattr(route, "path") else "unmatched"
            if scope["path"].startswith("/api/link/") or scope.get("link"):
                label = "link:" + label
            duration = time.perf_counter() - start
            metrics.REQUESTS.labels(method, label, str(state["status"])).inc()
            metrics.LATENCY.labels(method, label).observe(state["ttfb"] if state["ttfb"] is not None else duration)
            principal = scope.get("principal")
            client = scope.get("client") or ("", 0)
            self.log.info(
                "request",
                extra={
                    "access": {
                        "method": method, "target": target, "status": state["status"], "bytes": state["sent"],
                        "duration_ms": round(duration * 1000, 2), "client": client[0],
                        "user": getattr(principal, "sub", None),
                        "token_kind": getattr(principal, "token_kind", None),
                        "capability": getattr(getattr(principal, "capability", None), "id", None),
                        "act": getattr(principal, "act_sub", None),
                    }
                },
            )
