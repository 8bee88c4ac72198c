"""Report figures (matplotlib, no display needed): slices through the box and the loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .export import box_centre_index  # noqa: E402
from .imageio import write_bytes_atomically  # noqa: E402

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
            ax.imshow(plane, cmap=cmap, vmin=window[0], vmax=window[1], aspect=aspect, origin="lower" if axis == 1 else "upper")
            ax.set_title(f"{title} ({'axial' if axis == 0 else 'coronal'})", fontsize=9)
            ax.axis("off")
            if box is not None:
                _outline(ax, box.voxels, axis)
    _loss_panel(axes[0, 4], session.history)
    _metrics_panel(axes[1, 4], session.history)
    figure.tight_layout()
    return _save(figure, Path(path))


def _outline(ax, voxels, axis: int) -> None:
    (y0, y1), (x0, x1) = [(voxels.lo[a], voxels.hi[a]) for a in range(3) if a != axis]
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.2))


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
    lines = []
    for record in history:
        metrics = record.metrics
        text = f"{record.kind:<7} RMSE {metrics['rmse_hu']:.0f} HU"
        if metrics.get("rmse_hu_box") is not None:
            text += f", box {metrics['rmse_hu_box']:.0f} HU"
        if metrics.get("tre_mm"):
            text += f", TRE {metrics['tre_mm']['mean']:.2f} mm"
        if metrics.get("tre_mm_box"):
            text += f", box {metrics['tre_mm_box']['mean']:.2f} mm"
        lines.append(text)
    ax.text(0, 1, "\n".join(lines) or "no steps", va="top", family="monospace", fontsize=8)


def _save(figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return write_bytes_atomically(buffer.getvalue(), path)


def comparison_figure(iso_arm, rso_arm, box, rows: list[dict], path: str | Path) -> Path:
    """The paper's Fig. 2 layout: fixed, moving, ISO- and RSO-warped; the box zoomed; differences; losses."""
    reference = rso_arm.reference_hu
    images = [
        ("fixed", rso_arm.fixed_hu),
        ("moving", rso_arm.moving_hu),
        (rows[2]["result"], iso_arm.warped_model_grid()),
        (rows[4]["result"], rso_arm.warped_model_grid()),
    ]
    rmse_box = {"moving": rows[0]["rmse_hu_box"], rows[2]["result"]: rows[2]["rmse_hu_box"], rows[4]["result"]: rows[4]["rmse_hu_box"]}
    centre_y = (box.voxels.lo[1] + box.voxels.hi[1]) // 2
    spacing = rso_arm.grid.voxel_size_mm()
    aspect = spacing[0] / spacing[2]
    (z0, z1), (x0, x1) = (box.voxels.lo[0], box.voxels.hi[0]), (box.voxels.lo[2], box.voxels.hi[2])
    pad = max(2, (x1 - x0) // 3)
    zoom = (slice(max(z0 - pad, 0), z1 + pad), slice(max(x0 - pad, 0), x1 + pad))
    figure, axes = plt.subplots(3, 5, figsize=(20, 11), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.2]})
    for column, (title, volume) in enumerate(images):
        plane = volume[:, centre_y, :]
        show = dict(cmap="gray", vmin=IMAGE_WINDOW[0], vmax=IMAGE_WINDOW[1], origin="lower", aspect=aspect)
        axes[0, column].imshow(plane, **show)
        axes[0, column].add_patch(Rectangle((x0 - 0.5, z0 - 0.5), x1 - x0, z1 - z0, fill=False, edgecolor="red"))
        axes[0, column].set_title(title, fontsize=10)
        axes[1, column].imshow(plane[zoom], extent=_extent(zoom), **show)
        axes[1, column].add_patch(Rectangle((x0 - 0.5, z0 - 0.5), x1 - x0, z1 - z0, fill=False, edgecolor="red"))
        if title != "fixed":
            difference = (volume - reference)[:, centre_y, :][zoom]
            axes[2, column].imshow(difference, cmap="gray", vmin=DIFFERENCE_WINDOW[0], vmax=DIFFERENCE_WINDOW[1],
                                   origin="lower", aspect=aspect, extent=_extent(zoom))
            axes[2, column].set_title(f"{title} - clean fixed: box RMSE {rmse_box[title]:.0f} HU", fontsize=9)
    for ax in axes[:, :4].ravel():
        ax.axis("off")
    _loss_dynamics(axes[0, 4], iso_arm.history, rso_arm.history)
    _rows_panel(axes[1, 4], rows)
    axes[2, 4].axis("off")
    axes[2, 0].text(0.5, 0.5, "coronal slice through the box\nimages [-1000, 500] HU\ndifferences [-500, 500] HU",
                    ha="center", va="center", fontsize=10, transform=axes[2, 0].transAxes)
    figure.tight_layout()
    return _save(figure, Path(path))


def _extent(zoom) -> list[float]:
    (z, x) = zoom
    return [x.start - 0.5, x.stop - 0.5, z.start - 0.5, z.stop - 0.5]


def _loss_dynamics(ax, iso_history, rso_history) -> None:
    """ISO's loss (whole image) against ISO then RSO (box), on one iteration axis, as in the paper."""
    iso_loss = [v for r in iso_history for v in r.loss]
    ax.plot(range(1, len(iso_loss) + 1), iso_loss, "r-", label="ISO")
    start = 0
    for record in rso_history:
        if record.loss:
            style = "b--" if record.kind == "rso" else "b:"
            ax.plot(range(start + 1, start + len(record.loss) + 1), record.loss, style, label=f"{record.kind.upper()} (then)")
            start += len(record.loss)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title("loss dynamics (RSO loss is over the box)", fontsize=10)
    ax.legend(fontsize=8)


def _rows_panel(ax, rows: list[dict]) -> None:
    ax.axis("off")
    lines = [f"{'':<22}{'RMSE HU':>9}{'box':>7}{'TRE mm':>8}{'box':>7}"]
    for row in rows:
        lines.append(f"{row['result'][:22]:<22}{row['rmse_hu']:>9.0f}{row['rmse_hu_box']:>7.0f}"
                     f"{row['tre_mm']:>8.2f}{row['tre_mm_box']:>7.2f}")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8.5)
