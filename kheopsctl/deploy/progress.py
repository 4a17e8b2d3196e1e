"""Live view of the services while the stack comes up: a rich table on a terminal, one line per change otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

STYLE = {"healthy": "green", "running": "green", "starting": "yellow", "created": "yellow",
         "restarting": "red", "unhealthy": "red", "exited": "red", "dead": "red", "missing": "dim"}


class ServiceProgress:
    def __init__(self, console: Console, services: list[str]):
        self.console = console
        self.services = services
        self.states: dict[str, str] = {s: "missing" for s in services}
        self.started = time.monotonic()
        self.ready_at: dict[str, float] = {}
        self.live: Live | None = None

    def __enter__(self) -> "ServiceProgress":
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def update(self, states: dict[str, str]) -> None:
        now = time.monotonic() - self.started
        for service, state in states.items():
            if self.states.get(service) != state:
                if state in ("healthy", "running") and service not in self.ready_at:
                    self.ready_at[service] = now
                if self.live is None:
                    self.console.print(f"  {service:<10} {state} ({now:.0f}s)", highlight=False)
            self.states[service] = state
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(title="bringing up the site", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("service")
        table.add_column("state")
        table.add_column("ready after", justify="right")
        for service in self.services:
            state = self.states[service]
            ready = self.ready_at.get(service)
            table.add_row(service, f"[{STYLE.get(state, 'white')}]{state}[/]", f"{ready:.0f}s" if ready else "")
        return table
