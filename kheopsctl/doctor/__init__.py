"""`kheopsctl doctor`: pre-flight and live checks with stable names, statuses, messages and hints.

Public API (used by `install` and the CLI):
- ``CheckResult``: one check's result (name, status ok|warn|fail|skip|error, message, hint, details, duration_ms)
- ``run_preflight(settings, layout)``: the host checks `install` runs before touching anything
- ``run_doctor(settings, layout, names=None, preflight_only=False, notice=None)``: a full run (a ``Report``)
"""

from __future__ import annotations

from typing import Any

from kheopsctl.config import Settings
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.registry import select
from kheopsctl.doctor.result import FAILING, STATUSES, CheckResult, summarize
from kheopsctl.doctor.runner import NoticeFn, Report, run_checks
from kheopsctl.site import Site

# importing the check modules registers their checks (after the registry, which they import)
from kheopsctl.doctor import containers, database, e2e, keycloak, pacs, posture, preflight, tls  # noqa: E402,F401,I001

__all__ = ["CheckResult", "STATUSES", "FAILING", "Report", "run_preflight", "run_doctor", "summarize", "to_json"]


def run_doctor(
    settings: Settings,
    layout: Any,
    names: list[str] | None = None,
    preflight_only: bool = False,
    notice: NoticeFn | None = None,
    site: Site | None = None,
) -> Report:
    checks = select(names, preflight_only=preflight_only)
    ctx = DoctorContext(settings, layout, site=site)
    try:
        return run_checks(checks, ctx, notice=notice)
    finally:
        ctx.close()


def run_preflight(settings: Settings, layout: Any, notice: NoticeFn | None = None,
                  site: Site | None = None) -> list[CheckResult]:
    """The pre-flight checks (Docker, Compose, memory/CPUs, disk, ports, clock). Never raises for a failed check:
    look for ``result.failed`` (fail or error)."""
    return run_doctor(settings, layout, preflight_only=True, notice=notice, site=site).results


def to_json(report: Report) -> dict[str, Any]:
    """The stable JSON document (see kheopsctl/doctor/schema.json and docs/doctor.md)."""
    summary = summarize(report.results)
    summary["duration_ms"] = round(report.duration_ms, 1)
    return {"schema_version": 1, "checks": [r.to_dict() for r in report.results], "summary": summary}
