"""What a router keeps across restarts: its peer name and the operator's connection targets."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..mesh.names import parse_peer_name, random_peer_name
from .paths import Paths


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_or_create_peer_name(paths: Paths, override: str | None) -> str:
    """--name wins (and is remembered); otherwise the persisted name; otherwise a new random one."""
    if override:
        name = parse_peer_name(override)
    elif paths.peer_name_file.exists():
        name = parse_peer_name(paths.peer_name_file.read_text())
    else:
        name = random_peer_name()
    write_atomic(paths.peer_name_file, name + "\n")
    return name


def load_targets(paths: Paths) -> list[str]:
    try:
        data = json.loads(paths.targets_file.read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [str(t) for t in data.get("targets", [])] if isinstance(data, dict) else []


def save_targets(paths: Paths, targets: list[str]) -> None:
    write_atomic(paths.targets_file, json.dumps({"targets": targets}) + "\n")
