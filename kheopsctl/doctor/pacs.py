"""Live: the PACS answers a DICOMweb QIDO, asked from the gateway container with the gateway's credentials."""

from __future__ import annotations

from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.inside import ProbeUnavailable, gateway_probe
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip


@check("pacs.qido", "live", "the PACS answers a DICOMweb QIDO (GET /studies) as the gateway reaches it")
def pacs_qido(ctx: DoctorContext) -> Outcome:
    try:
        out = gateway_probe(ctx)["pacs"]
    except ProbeUnavailable:
        return skip("the gateway container is not running, so the PACS cannot be reached (see container.gateway)")
    url = out.get("pacs_url")
    details = {k: v for k, v in out.items() if k != "body"}
    embedded = ctx.settings.pacs.kind == "orthanc"
    where = "the orthanc container" if embedded else f"the PACS at {ctx.settings.pacs.url}"
    if "error" in out:
        if embedded:
            orthanc = next(iter(ctx.project_containers().get("orthanc", [])), None)
            hint = (f"start it: `docker start {orthanc.name}`, then check `docker logs {orthanc.name}`"
                    if orthanc is not None else f"re-run `kheopsctl install --dir {ctx.layout.dir}`")
        else:
            hint = "check that the PACS runs and that the gateway container can reach it (network, DNS, firewall)"
        return fail(f"{where} is unreachable from the gateway ({url}): {out['error']}", hint, **details)
    status = out["status"]
    if status in (401, 403):
        return fail(f"{where} refused the gateway's credentials (HTTP {status})",
                    "the PACS credentials (pacs.username / password_file / bearer_token_file, or the generated "
                    "kheops_pacs_http_pass) do not match what the PACS expects", **details)
    if status not in (200, 204):
        return fail(f"QIDO {url}/studies answered HTTP {status}: {out.get('body', '')[:120]}",
                    "check pacs.url points at the DICOMweb root (…/dicom-web) and the PACS's logs", **details)
    if status == 200 and "json" not in out.get("content_type", ""):
        return fail(f"QIDO answered {out['content_type']!r}, not DICOM JSON", "check pacs.url", **details)
    n = out.get("studies", 0)
    return ok(f"QIDO answered at {url} ({n} stud{'y' if n == 1 else 'ies'} in the first page)", **details)
