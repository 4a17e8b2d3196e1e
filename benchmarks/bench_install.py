#!/usr/bin/env python3
"""Time-to-healthy of `kheopsctl install` against a plain `docker compose up -d --wait` of the same rendered file.

Both start from fresh volumes, in the same run, on the same images (built once beforehand so neither side pays
for an image build). Also times a no-change re-run of `kheopsctl install`. Prints a table of seconds and ratios.

    python benchmarks/bench_install.py [--config tests/stack/kheops-test.toml] [--repeat 1] [--port-base 48080]

Targets (issue 2): install / compose <= 1.10, no-change re-run < 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KHEOPSCTL = str(Path(sys.executable).parent / "kheopsctl")


def sh(argv: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    if check and result.returncode != 0:
        sys.exit(f"command failed: {' '.join(argv)}\n{result.stderr[-3000:]}")
    return result


def stack_env(project: str, port_base: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHEOPS_")}
    env.update(KHEOPS_PROJECT=project, KHEOPS_PORTS__HTTP=str(port_base), KHEOPS_PORTS__KEYCLOAK=str(port_base + 1),
               KHEOPS_PORTS__HTTPS=str(port_base + 363), KHEOPS_ROOT_URL=f"http://127.0.0.1:{port_base}",
               DOCKER_BUILDKIT="0")
    return env


def prebuild(config: Path, env: dict) -> None:
    """Build the derived images (gateway, optimized Keycloak) outside the timings."""
    sys.path.insert(0, str(REPO))
    from kheopsctl.config import load_settings
    from kheopsctl.deploy.compose import docker_client
    from kheopsctl.deploy.gateway_image import ensure_gateway_image
    from kheopsctl.deploy.keycloak_image import ensure_keycloak_image

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(Path(tmp), config_file=config, environ=env)
    client = docker_client()
    ensure_gateway_image(client, settings)
    ensure_keycloak_image(client, settings)


def time_kheopsctl(config: Path, env: dict) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="kbench-") as tmp:
        site = Path(tmp) / "kheops"
        try:
            t0 = time.monotonic()
            out = sh([KHEOPSCTL, "install", "--dir", str(site), "--config", str(config), "--yes", "--json"], env)
            first = time.monotonic() - t0
            _require_no_build(out, "first install")
            steps = json.loads(out.stdout).get("timings", {})
            print("  install steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()), file=sys.stderr)
            for _attempt in range(3):
                t0 = time.monotonic()
                out = sh([KHEOPSCTL, "install", "--dir", str(site), "--yes", "--json"], env)
                rerun = time.monotonic() - t0
                if not json.loads(out.stdout)["recreated"]:
                    break
                # the kheopsctl source changed meanwhile (gateway rebuilt): that run was not a no-change re-run
                print("  re-run recreated containers (source changed meanwhile); measuring again", file=sys.stderr)
        finally:
            sh([KHEOPSCTL, "down", "--dir", str(site), "--purge-data", "--yes"], env, check=False)
    return first, rerun


def _require_no_build(out: subprocess.CompletedProcess, what: str) -> None:
    if json.loads(out.stdout)["built_gateway_image"]:
        print(f"  warning: {what} rebuilt the gateway image (source changed since the pre-build): "
              "this run includes a build", file=sys.stderr)


def time_compose(config: Path, env: dict) -> float:
    sys.path.insert(0, str(REPO))
    from kheopsctl.deploy.compose import compose_command

    with tempfile.TemporaryDirectory(prefix="kbench-") as tmp:
        site = Path(tmp) / "kheops"
        sh([KHEOPSCTL, "install", "--dir", str(site), "--config", str(config), "--yes", "--no-start"], env)
        base = [*compose_command(), "--project-name", env["KHEOPS_PROJECT"], "-f", str(site / "docker-compose.yml")]
        try:
            t0 = time.monotonic()
            sh([*base, "up", "-d", "--wait", "--wait-timeout", "900"], env)
            return time.monotonic() - t0
        finally:
            sh([*base, "down", "--volumes", "--remove-orphans"], env, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "tests/stack/kheops-test.toml")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--port-base", type=int, default=48080)
    args = parser.parse_args()

    env_a = stack_env("kbench-install", args.port_base)
    env_b = stack_env("kbench-compose", args.port_base + 10)
    prebuild(args.config, env_a)
    installs, reruns, composes = [], [], []
    for i in range(args.repeat):
        # alternate the order so a load change on the host does not always favour the same side
        order = [("install", env_a), ("compose", env_b)] if i % 2 == 0 else [("compose", env_b), ("install", env_a)]
        for kind, env in order:
            if kind == "install":
                first, rerun = time_kheopsctl(args.config, env)
                installs.append(first)
                reruns.append(rerun)
            else:
                composes.append(time_compose(args.config, env))
        print(f"run {i + 1}: install {installs[-1]:.1f}s, compose {composes[-1]:.1f}s, re-run {reruns[-1]:.1f}s",
              file=sys.stderr)

    inst, comp, rer = statistics.median(installs), statistics.median(composes), statistics.median(reruns)
    rows = [
        ("kheopsctl install, fresh volumes (s)", f"{inst:.1f}", ""),
        ("docker compose up -d --wait, fresh volumes (s)", f"{comp:.1f}", ""),
        ("ratio install / compose", f"{inst / comp:.2f}", "<= 1.10"),
        ("kheopsctl install, no-change re-run (s)", f"{rer:.1f}", "< 5"),
    ]
    rows.append(("host load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}", f"{os.cpu_count()} CPUs"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure (median of ' + str(args.repeat) + ')':<{width}}  {'value':>7}  target")
    print("-" * (width + 20))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>7}  {target}")


if __name__ == "__main__":
    main()
