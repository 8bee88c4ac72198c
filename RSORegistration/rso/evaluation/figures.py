"""Evaluation figures: the paper's Fig. 2 layout for the demo and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.patches import Rectangle

from rso.core.native_grid import native_field, warp_native
from rso.core.report_figure import DIFFERENCE_WINDOW, IMAGE_WINDOW, plt, save_figure


def comparison_figure(iso_arm, rso_arm, box, rows: list[dict], path: str | Path) -> Path:
    """The paper's Fig. 2 layout at the fixed image's native resolution.

    Fixed, moving, ISO-long- and ISO-short + RSO-warped through a coronal plane of the box; the box
    zoomed; differences to the clean fixed image; the loss curves and the comparison rows.
    """
    plane, (x0, x1), (z0, z1) = _native_plane(rso_arm.fixed, box)
    images = [
        ("fixed", _coronal(rso_arm.fixed, plane)),
        ("moving", _coronal(_moving_on_fixed(rso_arm), plane)),
        (rows[2]["result"], _coronal(_warped(iso_arm), plane)),
        (rows[-1]["result"], _coronal(_warped(rso_arm), plane)),
    ]
    reference = _coronal(rso_arm.reference if rso_arm.reference is not None else rso_arm.fixed, plane)
    shown = (rows[0] | {"result": "moving"}, rows[2], rows[-1])
    rmse_box = {row["result"]: row["rmse_hu_box"] for row in shown}
    spacing = rso_arm.fixed.GetSpacing()
    figure, axes = plt.subplots(3, 5, figsize=(20, 11), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.2]})
    _image_panels(axes, images, reference, rmse_box, ((x0, x1), (z0, z1)), spacing[2] / spacing[0])
    _loss_dynamics(axes[0, 4], iso_arm.history, rso_arm.history)
    _rows_panel(axes[1, 4], rows)
    axes[2, 4].axis("off")
    axes[2, 0].text(
        0.5,
        0.5,
        f"coronal plane through the box, at the fixed image's\n{spacing[0]:.2g} x "
        f"{spacing[2]:.2g} mm voxels\nimages [-1000, 500] HU\ndifferences [-500, 500] HU",
        ha="center",
        va="center",
        fontsize=10,
        transform=axes[2, 0].transAxes,
    )
    figure.tight_layout()
    return save_figure(figure, Path(path))


def _image_panels(axes, images, reference: np.ndarray, rmse_box: dict, box_range, aspect: float) -> None:
    """Columns 0-3: each (title, coronal image) whole, zoomed on the box (``box_range``: its (i, k)
    index ranges in the plane) and, but for the fixed image, its difference to ``reference``."""
    (x0, x1), (z0, z1) = box_range
    show = dict(cmap="gray", vmin=IMAGE_WINDOW[0], vmax=IMAGE_WINDOW[1], origin="lower", aspect=aspect)
    pad = max(2, (x1 - x0) // 3)
    zoom = (slice(max(z0 - pad, 0), z1 + pad), slice(max(x0 - pad, 0), x1 + pad))
    outline = dict(xy=(x0 - 0.5, z0 - 0.5), width=x1 - x0, height=z1 - z0, fill=False, edgecolor="red")
    for column, (title, image) in enumerate(images):
        axes[0, column].imshow(image, **show)
        axes[0, column].add_patch(Rectangle(**outline))
        axes[0, column].set_title(title, fontsize=10)
        axes[1, column].imshow(image[zoom], extent=_extent(zoom), **show)
        axes[1, column].add_patch(Rectangle(**outline))
        if title != "fixed":
            axes[2, column].imshow(
                (image - reference)[zoom],
                extent=_extent(zoom),
                **{**show, "vmin": DIFFERENCE_WINDOW[0], "vmax": DIFFERENCE_WINDOW[1]},
            )
            axes[2, column].set_title(f"{title} - clean fixed: box RMSE {rmse_box[title]:.0f} HU", fontsize=9)
    for ax in axes[:, :4].ravel():
        ax.axis("off")


def _native_plane(fixed: sitk.Image, box) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """The fixed image's coronal plane (index j) through the box centre and the box's i and k ranges."""
    corners = np.array(np.meshgrid(*zip(box.lps_min, box.lps_max), indexing="ij")).reshape(3, -1).T
    index = np.array([fixed.TransformPhysicalPointToContinuousIndex(c.tolist()) for c in corners])
    lo, hi = np.floor(index.min(axis=0) + 0.5).astype(int), np.ceil(index.max(axis=0) + 0.5).astype(int)
    size = np.array(fixed.GetSize())
    lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
    return int((lo[1] + hi[1]) // 2), (int(lo[0]), int(hi[0])), (int(lo[2]), int(hi[2]))


def _coronal(image: sitk.Image, plane: int) -> np.ndarray:
    return sitk.GetArrayViewFromImage(image)[:, plane, :].astype(np.float32)


def _warped(session) -> sitk.Image:
    return warp_native(session.moving, native_field(session), session.fixed)


def _moving_on_fixed(session) -> sitk.Image:
    return sitk.Resample(
        session.moving, session.fixed, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32
    )


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
            ax.plot(
                range(start + 1, start + len(record.loss) + 1),
                record.loss,
                style,
                label=f"{record.kind.upper()} (then)",
            )
            start += len(record.loss)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title("loss dynamics (RSO loss is over the box)", fontsize=10)
    ax.legend(fontsize=8)


def _rows_panel(ax, rows: list[dict]) -> None:
    ax.axis("off")
    lines = [f"{'':<26}{'RMSE HU':>9}{'box':>7}{'TRE mm':>8}{'box':>7}"]
    for row in rows:
        lines.append(
            f"{row['result'][:26]:<26}{row['rmse_hu']:>9.0f}{row['rmse_hu_box']:>7.0f}"
            f"{row['tre_mm']:>8.2f}{row['tre_mm_box']:>7.2f}"
        )
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
