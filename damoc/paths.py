"""Where DaMoC keeps what it builds or downloads: $DAMOC_HOME, default ~/.cache/damoc."""
from __future__ import annotations

import os
from pathlib import Path


def damoc_home() -> Path:
    return Path(os.environ.get("DAMOC_HOME") or Path.home() / ".cache" / "damoc")
