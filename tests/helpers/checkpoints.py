"""Tampering with checkpoints the way an attacker would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def fix_checkpoint_hashes(directory: Path) -> None:
    """Rewrite MANIFEST.json so that every file's size and sha256 match again (as an attacker would)."""
    manifest = json.loads((directory / "MANIFEST.json").read_text())
    for name in manifest["files"]:
        data = (directory / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
