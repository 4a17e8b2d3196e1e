"""The doctor framework: registry, parallel runner, statuses, JSON document and schema, exit codes.

These need no stack. The CLI is run for real, in-process with Typer's CliRunner (conftest.run_cli); a check is
made to crash by replacing one check's function (the only way to provoke a crash).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from kheopsctl.doctor import CheckResult, run_doctor, to_json
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.registry import Check, all_checks, select
from kheopsctl.doctor.result import fail, ok, skip, summarize, warn
from kheopsctl.doctor.runner import run_checks
from kheopsctl.errors import KheopsError

from .conftest import by_name, run_cli, validate

EXPECTED_NAMES = {
    "docker.engine", "docker.compose", "docker.resources", "disk.space", "ports", "clock",
    "container.postgres", "container.keycloak", "container.orthanc", "container.gateway", "container.nginx",
    "container.certbot", "postgres.connect", "postgres.schema", "keycloak.discovery", "keycloak.issuer",
    "keycloak.realm", "keycloak.redirects", "pacs.qido", "gateway.ready", "e2e.probe", "tls.certificate",
    "tls.expiry", "tls.redirect", "security.secret-modes", "security.exposure", "security.admin-console",
    "security.admin-password", "security.wildcard-redirects",
}


def test_registry_names_are_stable_and_unique():
    names = [c.name for c in all_checks()]
    assert len(names) == len(set(names))
    # the names are a public interface (scripts select and parse them): removing one is a breaking change
    assert EXPECTED_NAMES <= set(names)
    assert {c.name for c in all_checks() if c.phase == "preflight"} == {
        "docker.engine", "docker.compose", "docker.resources", "disk.space", "ports", "clock"}


def test_select_by_name_group_and_glob():
    assert [c.name for c in select(["clock"])] == ["clock"]
    assert {c.name for c in select(["keycloak"])} == {
        "keycloak.discovery", "keycloak.issuer", "keycloak.realm", "keycloak.redirects"}
    assert {c.name for c in select(["tls.*"])} == {"tls.certificate", "tls.expiry", "tls.redirect"}
    assert all(c.phase == "preflight" for c in select(None, preflight_only=True))


def test_select_unknown_name_is_a_usage_error():
    with pytest.raises(KheopsError) as info:
        select(["keycloak.nope"])
    assert info.value.exit_code == 2
    assert "--list-checks" in info.value.hint


def test_live_check_with_preflight_is_a_usage_error():
    with pytest.raises(KheopsError) as info:
        select(["keycloak.realm"], preflight_only=True)
    assert info.value.exit_code == 2 and "live check" in info.value.message


def _check(name, fn):
    return Check(name, "preflight", "test", fn)


def test_a_crashing_check_is_reported_as_error_and_the_others_still_run(site):
    settings, layout = site

    def boom(ctx):
        raise RuntimeError("kaboom")

    checks = [_check("a", lambda ctx: ok("fine")), _check("b", boom), _check("c", lambda ctx: warn("meh", "do x"))]
    report = run_checks(checks, DoctorContext(settings, layout))
    results = by_name(report.results)
    assert [r.name for r in report.results] == ["a", "b", "c"]  # given order, whatever finishes first
    assert results["a"].status == "ok" and results["c"].status == "warn"
    assert results["b"].status == "error"
    assert "RuntimeError: kaboom" in results["b"].message
    assert "--check b" in results["b"].hint
    assert "kaboom" in results["b"].details["traceback"]


def test_an_unreachable_docker_engine_fails_the_live_checks_with_one_answer(site, monkeypatch):
    """Really unreachable: DOCKER_HOST names a socket that does not exist."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/kheops-test/docker.sock")
    registered = {c.name: c for c in all_checks()}
    names = ["postgres.connect", "postgres.schema", "pacs.qido"]
    report = run_checks([registered[n] for n in names], DoctorContext(*site))
    # said once (it used to be the raw exception, repeated by every check): the first fails, naming the socket
    # and what to do about it, the others are skipped
    first, *others = report.results
    assert first.status == "fail" and first.message.startswith("Docker engine not reachable"), first.message
    assert "/nonexistent/kheops-test/docker.sock" in first.message and "start dockerd" in first.hint
    assert "Traceback" not in first.message and "DockerException" not in first.message
    for r in others:
        assert r.status == "skip" and "Docker engine" in r.message, (r.name, r.message)


def test_a_socket_this_user_may_not_use_is_told_apart_from_a_stopped_engine(site, monkeypatch, tmp_path):
    """A real socket file the test's user cannot open (mode 000; root would bypass it, so the test makes
    sure the check really cannot open it)."""
    import os
    import socket

    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK | os.W_OK):
            # root: access() ignores the mode; check the hint rule directly against a non-root view
            from kheopsctl.site.docker import engine_hint

            monkeypatch.setattr(os, "access", lambda *a, **k: False)
            assert "docker group" in engine_hint(f"unix://{path}")
            return
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        report = run_checks([{c.name: c for c in all_checks()}["docker.engine"]], DoctorContext(*site))
        assert "docker group" in report.results[0].hint and "start dockerd" not in report.results[0].hint
    finally:
        server.close()


def test_a_check_returning_garbage_is_an_error(site):
    report = run_checks([_check("x", lambda ctx: "ok")], DoctorContext(*site))
    assert report.results[0].status == "error"
    assert "not an Outcome" in report.results[0].message


def test_checks_run_in_parallel(site):
    barrier = threading.Barrier(4, timeout=5)

    def meet(ctx):  # deadlocks (then BrokenBarrierError -> error) unless all four run at once
        barrier.wait()
        return ok("met")

    report = run_checks([_check(f"p{i}", meet) for i in range(4)], DoctorContext(*site))
    assert [r.status for r in report.results] == ["ok"] * 4


def test_slow_check_gets_a_notice_and_a_hung_check_times_out(site):
    notices = []
    release = threading.Event()

    def slow(ctx):
        time.sleep(0.8)
        return ok("slow but fine")

    def hung(ctx):
        release.wait(10)
        return ok("never reported")

    checks = [_check("fast", lambda ctx: ok("quick")), _check("slow", slow), _check("hung", hung)]
    try:
        report = run_checks(checks, DoctorContext(*site), notice=lambda n, t: notices.append(n),
                            slow_after=0.3, timeout=1.5)
    finally:
        release.set()
    results = by_name(report.results)
    assert "fast" not in notices and {"slow", "hung"} <= set(notices)
    assert results["slow"].status == "ok"
    assert results["hung"].status == "error" and "did not finish" in results["hung"].message


def test_summary_and_healthy_flag():
    rs = [CheckResult("a", "ok", "m"), CheckResult("b", "warn", "m", "h"), CheckResult("c", "skip", "m")]
    s = summarize(rs)
    assert (s["total"], s["ok"], s["warn"], s["skip"], s["healthy"]) == (3, 1, 1, 1, True)
    assert summarize(rs + [CheckResult("d", "fail", "m", "h")])["healthy"] is False
    assert summarize(rs + [CheckResult("e", "error", "m", "h")])["healthy"] is False
    with pytest.raises(ValueError):
        CheckResult("x", "fine", "m")


def test_json_document_validates_against_the_schema(site):
    settings, layout = site
    report = run_checks(
        [_check("a.b", lambda ctx: ok("x", n=1)), _check("c", lambda ctx: fail("y", "fix y")),
         _check("d", lambda ctx: skip("not here")), _check("e", lambda ctx: 1 / 0)],
        DoctorContext(settings, layout))
    document = to_json(report)
    validate(document)
    assert document["summary"]["fail"] == 1 and document["summary"]["error"] == 1


def test_schema_rejects_a_failure_without_hint():
    import jsonschema

    document = {"schema_version": 1, "summary": summarize([]),
                "checks": [{"name": "x", "status": "fail", "message": "m", "hint": "", "details": {},
                            "duration_ms": 1}]}
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


# ---- the real command line ----

def test_cli_unknown_check_exits_2_with_hint(site):
    _, layout = site
    r = run_cli("doctor", "--dir", str(layout.dir), "--check", "no.such.check")
    assert r.returncode == 2
    assert "unknown check 'no.such.check'" in r.stderr and "hint:" in r.stderr
    assert r.stdout == ""


def test_cli_list_checks(site):
    r = run_cli("doctor", "--list-checks", "--json")
    assert r.returncode == 0
    listed = json.loads(r.stdout)["checks"]
    assert EXPECTED_NAMES <= {c["name"] for c in listed}
    assert all(c["description"] for c in listed)
    r = run_cli("doctor", "--list-checks", "--preflight")
    assert r.returncode == 0 and "docker.engine" in r.stderr and "keycloak.realm" not in r.stderr


def test_cli_live_checks_without_a_site_is_a_usage_error(tmp_path):
    r = run_cli("doctor", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 2
    assert "no site in" in r.stderr and "--preflight" in r.stderr


def test_cli_preflight_passes_on_this_host_and_json_validates(site):
    _, layout = site
    r = run_cli("doctor", "--dir", str(layout.dir), "--preflight", "--json")
    document = json.loads(r.stdout)
    validate(document)
    assert r.returncode == 0, r.stderr
    assert {c["name"] for c in document["checks"]} == {
        "docker.engine", "docker.compose", "docker.resources", "disk.space", "ports", "clock"}
    assert document["summary"]["healthy"] is True
    # the human table is on stderr, never mixed into the JSON
    assert "docker.engine" in r.stderr and "healthy" in r.stderr


def test_cli_exits_1_when_a_check_fails(site):
    """A real failure: the Docker engine is unreachable (DOCKER_HOST points at a socket that does not exist)."""
    _, layout = site
    r = run_cli("doctor", "--dir", str(layout.dir), "--preflight", "--json",
                env={"DOCKER_HOST": f"unix://{layout.dir}/no-docker.sock"})
    assert r.returncode == 1
    document = json.loads(r.stdout)
    validate(document)
    results = by_name(document)
    assert results["docker.engine"]["status"] == "fail"
    assert "docker" in results["docker.engine"]["hint"].lower()
    # the run went on: the clock and the disk still got checked
    assert results["clock"]["status"] == "ok" and results["disk.space"]["status"] == "ok"


def test_cli_crashing_check_shows_as_error_and_the_run_continues(site, monkeypatch, capsys):
    """In-process so one check can be made to crash for real (its function replaced by one that raises)."""
    from kheopsctl import cli
    from kheopsctl.doctor import registry

    _, layout = site
    for name in [k for k in os.environ if k.startswith("KHEOPS_")]:
        monkeypatch.delenv(name)  # settings from the test's site only
    all_checks()
    original = registry._REGISTRY["clock"]

    def crash(ctx):
        raise ValueError("clock exploded")

    monkeypatch.setitem(registry._REGISTRY, "clock", Check("clock", original.phase, original.description, crash))
    monkeypatch.setattr(sys, "argv", ["kheopsctl", "doctor", "--dir", str(layout.dir), "--preflight", "--json"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    document = json.loads(capsys.readouterr().out)
    validate(document)
    results = by_name(document)
    assert results["clock"]["status"] == "error" and "clock exploded" in results["clock"]["message"]
    assert results["docker.engine"]["status"] == "ok"
    assert document["summary"]["error"] == 1


def test_run_doctor_api_used_by_install(site):
    settings, layout = site
    report = run_doctor(settings, layout, names=["clock", "disk"])
    assert [r.name for r in report.results] == ["disk.space", "clock"]
    assert all(r.status == "ok" for r in report.results)
