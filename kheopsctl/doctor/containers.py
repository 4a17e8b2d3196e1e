"""Live: each compose service of the site has a running, healthy container that is not crash-looping."""

from __future__ import annotations

from kheopsctl.doctor.context import DockerError, DoctorContext
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip, warn

SERVICES = ("postgres", "keycloak", "orthanc", "gateway", "nginx", "certbot")
RESTARTS_WARN = 3  # a few restarts happen (host reboot, OOM once); more means a crash loop


def container_check(service: str):
    def run(ctx: DoctorContext) -> Outcome:
        if service not in ctx.expected_services():
            why = {"orthanc": f"the PACS is external (pacs.kind={ctx.settings.pacs.kind})",
                   "certbot": f"certificates are not from Let's Encrypt (site.mode={ctx.settings.site.mode})"}
            return skip(f"not part of this site: {why.get(service, 'not configured')}")
        return container_state(ctx, service)

    run.__name__ = f"container_{service}"
    return run


for _service in SERVICES:
    check(f"container.{_service}", "live", f"the {_service} container is running, healthy and not restarting")(
        container_check(_service)
    )


def container_state(ctx: DoctorContext, service: str) -> Outcome:
    project = ctx.settings.project
    try:
        found = ctx.project_containers().get(service, [])
    except DockerError as exc:
        return fail(f"Docker engine not reachable: {exc.message}", exc.hint or "", needs="docker")
    if not found:
        return fail(f"no {service} container in compose project {project!r}",
                    f"run `kheopsctl install --dir {ctx.layout.dir}` to create it")
    c = found[0]
    state = c.attrs.get("State", {})
    restarts = int(c.attrs.get("RestartCount") or 0)
    health = (state.get("Health") or {}).get("Status")
    details = {"container": c.name, "state": c.status, "health": health, "restart_count": restarts,
               "image": (c.attrs.get("Config") or {}).get("Image")}
    if c.status != "running":
        code = state.get("ExitCode")
        oom = " (killed: out of memory)" if state.get("OOMKilled") else ""
        return fail(
            f"{c.name} is {c.status}" + (f", exit code {code}" if c.status == "exited" else "") + oom,
            f"start it with `docker start {c.name}`; if it stops again, read `docker logs {c.name}`",
            **details,
        )
    if health == "unhealthy":
        last = ((state.get("Health") or {}).get("Log") or [{}])[-1].get("Output", "").strip()[:200]
        return fail(f"{c.name} is running but unhealthy" + (f": {last}" if last else ""),
                    f"read `docker logs {c.name}`; `docker restart {c.name}` once the cause is fixed",
                    **details)
    if health == "starting":
        return warn(f"{c.name} is still starting (health check not yet passed)",
                    "wait a minute and run doctor again", **details)
    if restarts >= RESTARTS_WARN:
        return warn(f"{c.name} is running but restarted {restarts} times",
                    f"it is crash-looping or was killed; read `docker logs {c.name}`", **details)
    what = "healthy" if health == "healthy" else "running (no health check)"
    return ok(f"{c.name} {what}, {restarts} restart(s)", **details)
