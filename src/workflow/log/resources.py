"""Files shipped with workflow: ``nats.conf`` and ``streams/*.json``.

In a checkout they live at the repository root (where an operator edits them); in an
installed wheel they are packaged under ``workflow/_data``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DATA = Path(__file__).resolve().parents[1] / "_data"  # workflow/_data
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


def data_path(name: str) -> Path:
    """Path of a shipped file or folder, preferring the checkout's copy."""
    for root in (_CHECKOUT_ROOT, _PACKAGE_DATA):
        candidate = root / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} not found in {_CHECKOUT_ROOT} nor in {_PACKAGE_DATA}")
