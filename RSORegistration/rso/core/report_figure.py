"""The report figure (matplotlib, no display needed): slices through the last box and the loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from rso.core.imageio import write_bytes_atomically  # noqa: E402
from rso.core.summary import summary_text  # noqa: E402

IMAGE_WINDOW = (-1000, 500)  # the paper's display windows (Fig. 2)
DIFFERENCE_WINDOW = (-500, 500)


def report_figure(session, path: str | Path) -> Path:
    """Fixed, moving, warped and difference (axial and coronal through the box) plus losses."""
    warped = session.warped_model_grid()
    panels = [
        ("fixed", session.fixed_hu, "gray", IMAGE_WINDOW),
        ("moving", session.moving_hu, "gray", IMAGE_WINDOW),
        ("warped", warped, "gray", IMAGE_WINDOW),
        ("warped - fixed", warped - session.reference_hu, "RdBu_r", DIFFERENCE_WINDOW),
    ]
    centre = box_centre_index(session)
    box = next((r.box for r in reversed(session.history) if r.box is not None), None)
    spacing = session.grid.voxel_size_mm()
    figure, axes = plt.subplots(2, 5, figsize=(19, 7.5), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.3]})
    for column, (title, volume, cmap, window) in enumerate(panels):
        for row, axis in enumerate((0, 1)):  # axial (cut z), coronal (cut y)
            plane = volume.take(centre[axis], axis=axis)
            aspect = spacing[1] / spacing[2] if axis == 0 else spacing[0] / spacing[2]
            ax = axes[row, column]
            ax.imshow(
                plane,
                cmap=cmap,
                vmin=window[0],
                vmax=window[1],
                aspect=aspect,
                origin="lower" if axis == 1 else "upper",
            )
            ax.set_title(f"{title} ({'axial' if axis == 0 else 'coronal'})", fontsize=9)
            ax.axis("off")
            if box is not None:
                _outline(ax, box.voxels, axis)
    _loss_panel(axes[0, 4], session.history)
    _metrics_panel(axes[1, 4], session.history)
    figure.tight_layout()
    return save_figure(figure, Path(path))


def _outline(ax, voxels, axis: int) -> None:
    (y0, y1), (x0, x1) = [(voxels.lo[a], voxels.hi[a]) for a in range(3) if a != axis]
    ax.add_patch(
        Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.2)
    )


def _loss_panel(ax, history) -> None:
    start = 0
    for record in history:
        if record.loss:
            ax.plot(range(start + 1, start + len(record.loss) + 1), record.loss, label=record.kind.upper())
            start += len(record.loss)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("loss dynamics", fontsize=9)
    if start:
        ax.set_yscale("log")
        ax.legend(fontsize=8)


def _metrics_panel(ax, history) -> None:
    ax.axis("off")
    lines = [f"{record.kind:<7} {summary_text(record.metrics)}" for record in history]
    ax.text(0, 1, "\n".join(lines) or "no steps", va="top", family="monospace", fontsize=8)


def save_figure(figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return write_bytes_atomically(buffer.getvalue(), path)


def box_centre_index(session) -> np.ndarray:
    """Model-grid voxel at which figures cut: the last box's centre, or the grid centre."""
    boxes = [r.box for r in session.history if r.box is not None]
    if boxes:
        return np.array([(a + b) // 2 for a, b in zip(boxes[-1].voxels.lo, boxes[-1].voxels.hi)])
    return np.array(session.grid.shape) // 2
