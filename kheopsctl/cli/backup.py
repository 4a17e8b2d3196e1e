"""`kheopsctl backup`: one archive (0600) with the databases, Orthanc's storage, settings, secrets and certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kheopsctl.cli.common import DirOption, JsonOption, console, emit_json


def command(
    dir: Path = DirOption,  # noqa: A002
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Archive file, or a directory for a dated name (default DIR/backups/)."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Then keep only the N newest backups of this site there."),
    recipient: Optional[str] = typer.Option(None, "--recipient",
                                            help="Encrypt to this age public key (age1...); restore needs its key."),
    lock_wait: float = typer.Option(600, "--lock-wait", help="Seconds to wait for uploads in flight to finish."),
    json_out: bool = JsonOption,
) -> None:
    """Back the site up while it runs: reads go on; uploads get 503 + Retry-After during the dumps."""
    from kheopsctl.ops.backup import BackupOptions, _human, run_backup
    from kheopsctl.ops.sitectx import SiteContext

    with SiteContext.open(dir) as ctx:
        result = run_backup(ctx, BackupOptions(output=output, recipient=recipient, keep=keep,
                                               lock_wait_seconds=lock_wait),
                            notice=lambda m: console.print(m, highlight=False, markup=False))
    console.print(f"[green]backup written[/] {result.path} ({_human(result.size)}, {result.seconds:.0f} s, "
                  f"uploads paused {result.paused_seconds:.1f} s)", highlight=False)
    if result.removed:
        console.print(f"retention: removed {', '.join(result.removed)}", highlight=False)
    if json_out:
        emit_json(result.to_json())
