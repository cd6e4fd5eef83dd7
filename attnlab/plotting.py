"""Matplotlib without a display, and figures saved atomically (one place for both)."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

__all__ = ["pyplot", "save_figure"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically and close it.

    Args:
        fig: a matplotlib figure.
        path: the PNG to write.
        dpi: resolution.
    """
    plt = pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)
