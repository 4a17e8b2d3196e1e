"""The result of one check: what the JSON output and the human table are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "warn", "fail", "skip", "error")
# statuses that make `kheopsctl doctor` exit 1
FAILING = ("fail", "error")


@dataclass
class CheckResult:
    name: str
    status: str  # ok | warn | fail | skip | error
    message: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
            "duration_ms": round(self.duration_ms, 1),
        }


class Outcome:
    """What a check function returns; the runner adds the name and the duration.

    Use the helpers ``ok()``, ``warn()``, ``fail()``, ``skip()`` rather than building it by hand.
    """

    __slots__ = ("status", "message", "hint", "details")

    def __init__(self, status: str, message: str, hint: str = "", details: dict[str, Any] | None = None):
        if status not in STATUSES:
            raise ValueError(f"unknown check status {status!r}")
        self.status = status
        self.message = message
        self.hint = hint
        self.details = details or {}


def ok(message: str, **details: Any) -> Outcome:
    return Outcome("ok", message, "", details)


def warn(message: str, hint: str, **details: Any) -> Outcome:
    return Outcome("warn", message, hint, details)


def fail(message: str, hint: str, **details: Any) -> Outcome:
    return Outcome("fail", message, hint, details)


def skip(reason: str, **details: Any) -> Outcome:
    return Outcome("skip", reason, "", details)


def summarize(results: list[CheckResult]) -> dict[str, Any]:
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] += 1
    return {
        "total": len(results),
        **counts,
        "healthy": not any(r.failed for r in results),
        "duration_ms": round(max((r.duration_ms for r in results), default=0.0), 1),
    }
