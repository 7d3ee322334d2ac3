"""Per-instance paths: WEAVE_RUNDIR (socket, pid, log, API token) and WEAVE_DATADIR (persisted state)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    rundir: Path
    datadir: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get("WEAVE_RUNDIR", "/run/weave")),
                   Path(os.environ.get("WEAVE_DATADIR", "/var/lib/weave")))

    @property
    def socket(self) -> Path:
        return self.rundir / "weave.sock"

    @property
    def pidfile(self) -> Path:
        return self.rundir / "weave.pid"

    @property
    def logfile(self) -> Path:
        return self.rundir / "weave.log"

    @property
    def api_token(self) -> Path:
        """Bearer token of the local API: written 0600 by the router at start, read by the CLI."""
        return self.rundir / "api-token"

    @property
    def peer_name_file(self) -> Path:
        return self.datadir / "peer-name"

    @property
    def targets_file(self) -> Path:
        return self.datadir / "targets.json"

    @property
    def attachments_file(self) -> Path:
        return self.datadir / "attachments.json"

    @property
    def ipam_file(self) -> Path:
        return self.datadir / "ipam.json"

    def persisted_files(self) -> list[Path]:
        return [self.peer_name_file, self.targets_file, self.attachments_file, self.ipam_file]
