"""The check registry: every check has a stable name, a group and a one-line description.

Checks register themselves with ``@check(...)`` when their module is imported; ``all_checks()`` imports the
modules that hold them so the list is always complete.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from kheopsctl.errors import KheopsError

if TYPE_CHECKING:
    from kheopsctl.doctor.context import DoctorContext
    from kheopsctl.doctor.result import Outcome

CheckFn = Callable[["DoctorContext"], "Outcome"]

# phase "preflight" needs no stack (install runs these); "live" needs an installed site
PHASES = ("preflight", "live")


@dataclass(frozen=True)
class Check:
    name: str
    phase: str
    description: str
    fn: CheckFn


_REGISTRY: dict[str, Check] = {}


def check(name: str, phase: str, description: str) -> Callable[[CheckFn], CheckFn]:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")

    def register(fn: CheckFn) -> CheckFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"check {name!r} registered twice")
        _REGISTRY[name] = Check(name, phase, description, fn)
        return fn

    return register


def all_checks() -> list[Check]:
    # the check modules register themselves when kheopsctl.doctor (the package) imports them
    return sorted(_REGISTRY.values(), key=lambda c: _group_rank(c.name))


# the order of the table: host first, then the stack from the bottom up, then the posture
GROUP_ORDER = ("docker", "disk", "ports", "clock", "container", "postgres", "keycloak", "pacs", "gateway", "e2e",
               "tls", "security")


def _group_rank(name: str) -> int:
    group = name.split(".", 1)[0]
    return GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)


def select(names: list[str] | None = None, preflight_only: bool = False) -> list[Check]:
    """The checks to run, in registry order.

    A name selects one check exactly, or a group by prefix (``keycloak`` selects ``keycloak.*``), or a glob
    (``tls.*``). An unknown name is a usage error (exit 2).
    """
    everything = all_checks()
    checks = [c for c in everything if c.phase == "preflight"] if preflight_only else everything
    if not names:
        return checks
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip()
        matched = [c.name for c in checks if _matches(c.name, name)]
        if not matched and any(_matches(c.name, name) for c in everything):
            raise KheopsError(f"{name!r} is a live check, not a pre-flight one",
                              hint="drop --preflight to run it against the installed site", exit_code=2)
        if not matched:
            known = ", ".join(c.name for c in checks)
            raise KheopsError(
                f"unknown check {name!r}",
                hint=f"kheopsctl doctor --list-checks shows them all: {known}",
                exit_code=2,
            )
        wanted.update(matched)
    return [c for c in checks if c.name in wanted]


def _matches(check_name: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(check_name, pattern)
    return check_name == pattern or check_name.startswith(pattern + ".")
