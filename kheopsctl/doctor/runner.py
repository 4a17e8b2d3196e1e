"""Runs checks in parallel threads; a crash is an `error` result, a slow check gets a notice."""

from __future__ import annotations

import concurrent.futures as cf
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from kheopsctl.doctor.context import DockerError, DoctorContext, NotThisSite
from kheopsctl.doctor.registry import Check
from kheopsctl.doctor.result import CheckResult, Outcome

# after this long a running check is announced as "still running…"
SLOW_NOTICE_SECONDS = 3.0
# a check still running after this long is reported as error and abandoned (its thread is left to finish)
CHECK_TIMEOUT_SECONDS = 60.0

NoticeFn = Callable[[str, float], None]


@dataclass
class Report:
    results: list[CheckResult]
    duration_ms: float


def run_one(check: Check, ctx: DoctorContext) -> CheckResult:
    started = time.perf_counter()
    try:
        outcome = check.fn(ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check returned {type(outcome).__name__}, not an Outcome")
        result = CheckResult(check.name, outcome.status, outcome.message, outcome.hint, outcome.details)
    except DockerError as exc:  # any live check needs the engine: one answer for all of them (see _once)
        result = CheckResult(check.name, "fail", f"Docker engine not reachable: {exc.message}", exc.hint or "",
                             {"needs": "docker"})
    except NotThisSite as exc:
        result = CheckResult(check.name, "fail", f"not probed: {exc}", exc.hint, {"needs": "site"})
    except Exception as exc:  # a broken check must never stop the others
        result = CheckResult(
            check.name,
            "error",
            f"the check itself crashed: {type(exc).__name__}: {_first_line(exc)}",
            "this is a bug in kheopsctl doctor or an unexpected environment; run the check alone with "
            f"--check {check.name} and report the details",
            {"exception": type(exc).__name__, "traceback": traceback.format_exc(limit=6)},
        )
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def run_checks(
    checks: list[Check],
    ctx: DoctorContext,
    notice: NoticeFn | None = None,
    slow_after: float = SLOW_NOTICE_SECONDS,
    timeout: float = CHECK_TIMEOUT_SECONDS,
) -> Report:
    """Run every check at once (they are I/O bound) and return the results in the given order."""
    started = time.perf_counter()
    results: dict[str, CheckResult] = {}
    if not checks:
        return Report([], 0.0)
    pool = cf.ThreadPoolExecutor(max_workers=min(32, len(checks)), thread_name_prefix="doctor")
    try:
        futures = {pool.submit(run_one, c, ctx): c for c in checks}
        announced: set[str] = set()
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                results[futures[fut].name] = fut.result()
            elapsed = time.perf_counter() - started
            if elapsed >= timeout:
                for fut in pending:
                    c = futures[fut]
                    results[c.name] = CheckResult(
                        c.name, "error", f"the check did not finish within {timeout:.0f} s",
                        "something it talks to hangs; run it alone with --check " + c.name,
                        duration_ms=elapsed * 1000,
                    )
                break
            if notice and elapsed >= slow_after:
                for fut in pending:
                    name = futures[fut].name
                    if name not in announced:
                        announced.add(name)
                        notice(name, elapsed)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return Report(_once([results[c.name] for c in checks]), (time.perf_counter() - started) * 1000)


def _once(results: list[CheckResult]) -> list[CheckResult]:
    """An unreachable engine is said once: the first check that needed it fails, the others are skipped."""
    said = False
    for r in results:
        if r.details.get("needs") == "docker" or r.message.startswith("Docker engine not reachable"):
            if said:
                r.status, r.message, r.hint = "skip", "needs the Docker engine (not reachable, see above)", ""
            said = True
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"
