#!/usr/bin/env python3
"""How long a full `kheopsctl doctor` takes on a healthy installed site (target: under 5 s).

    python benchmarks/bench_doctor.py --dir SITE [--runs 7]

The site's own settings apply (kheops.toml plus the KHEOPS_* environment, e.g. KHEOPS_PROJECT and the ports of
a side-by-side test stack). Three ways are timed, each several times, and the medians compared:

- parallel:   run_doctor() in-process, the checks in threads (what the command does)
- sequential: the same checks one after another (the cost parallelism saves)
- cli:        the `kheopsctl doctor` console script end to end (Python start-up and imports included)

Prints a table of medians, min/max, the ratio to the 5 s budget and the parallel speed-up, then the slowest
checks of the parallel runs. Exits 1 if the CLI median is over budget or any check is not ok/skip.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kheopsctl.config import load_settings  # noqa: E402
from kheopsctl.doctor import run_doctor  # noqa: E402
from kheopsctl.doctor.context import DoctorContext, site_layout  # noqa: E402
from kheopsctl.doctor.registry import all_checks  # noqa: E402
from kheopsctl.doctor.runner import run_one  # noqa: E402

BUDGET_S = 5.0


def time_parallel(settings, layout):
    started = time.perf_counter()
    report = run_doctor(settings, layout)
    return time.perf_counter() - started, report.results


def time_sequential(settings, layout):
    ctx = DoctorContext(settings, layout)
    started = time.perf_counter()
    try:
        results = [run_one(c, ctx) for c in all_checks()]
    finally:
        ctx.close()
    return time.perf_counter() - started, results


def time_cli(site: Path):
    kheopsctl = Path(sys.executable).parent / "kheopsctl"
    started = time.perf_counter()
    proc = subprocess.run([str(kheopsctl), "doctor", "--dir", str(site), "--json"], capture_output=True, text=True)
    return time.perf_counter() - started, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="site directory of an installed, healthy site")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    settings = load_settings(args.dir)
    layout = site_layout(args.dir)

    time_parallel(settings, layout)  # warm-up: imports, first connections
    samples: dict[str, list[float]] = {"parallel": [], "sequential": [], "cli": []}
    per_check: dict[str, list[float]] = {}
    unhealthy: set[str] = set()
    cli_codes = []
    for _ in range(args.runs):  # interleaved, so load changes on the host hit every mode alike
        wall, results = time_parallel(settings, layout)
        samples["parallel"].append(wall)
        for r in results:
            per_check.setdefault(r.name, []).append(r.duration_ms)
            if r.status not in ("ok", "skip"):
                unhealthy.add(f"{r.name}: {r.status} {r.message}")
        samples["sequential"].append(time_sequential(settings, layout)[0])
        wall, code = time_cli(args.dir)
        samples["cli"].append(wall)
        cli_codes.append(code)

    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"kheopsctl doctor on {args.dir} ({len(all_checks())} checks, {args.runs} runs each)")
    print(f"{'mode':<12}{'median s':>10}{'min s':>9}{'max s':>9}{'/ 5 s budget':>14}{'vs sequential':>15}")
    for mode, values in samples.items():
        print(f"{mode:<12}{med[mode]:>10.2f}{min(values):>9.2f}{max(values):>9.2f}"
              f"{med[mode] / BUDGET_S:>14.2f}{med[mode] / med['sequential']:>15.2f}")
    print("\nslowest checks (parallel runs, median ms):")
    for name, values in sorted(per_check.items(), key=lambda kv: -statistics.median(kv[1]))[:6]:
        print(f"  {name:<30}{statistics.median(values):>8.0f}")
    failed = False
    if unhealthy:
        print("\nnot healthy:\n  " + "\n  ".join(sorted(unhealthy)))
        failed = True
    if any(cli_codes):
        print(f"\nthe CLI exited non-zero in some runs: {cli_codes}")
        failed = True
    if med["cli"] > BUDGET_S:
        print(f"\nover budget: CLI median {med['cli']:.2f} s > {BUDGET_S} s")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
