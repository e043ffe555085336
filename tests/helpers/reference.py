"""Where the BuildKit reference captures live: ``tests/data/buildkit-cache`` in the checkout.

The suite stands on its own (nothing beside the checkout), so the captures the tests read are copied
into the repository; ``LAMINA_REFERENCE_DIR`` overrides the directory (e.g. to try a newer capture).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REFERENCE_DIR"]

REFERENCE_DIR = Path(
    os.environ.get("LAMINA_REFERENCE_DIR") or Path(__file__).resolve().parents[1] / "data" / "buildkit-cache"
)
