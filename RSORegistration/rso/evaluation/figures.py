"""Evaluation figures: the paper's Fig. 2 layout for the demo and the benchmark."""

from __future__ import annotations

from pathlib import Path

from matplotlib.patches import Rectangle

from rso.core.report_figure import DIFFERENCE_WINDOW, IMAGE_WINDOW, plt, save_figure


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
    return save_figure(figure, Path(path))


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
