"""Where the BuildKit reference captures live: ``shared/reference/buildkit-cache`` beside the checkout.

CI runs in a fresh clone with a copy of ``shared/`` beside it, so the path is derived from this file's
location, never hard-coded; ``LAMINA_REFERENCE_DIR`` overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REFERENCE_DIR"]

REFERENCE_DIR = Path(
    os.environ.get("LAMINA_REFERENCE_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "reference" / "buildkit-cache"
)
