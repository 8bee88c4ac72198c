"""Label maps with known truth for simulated cases: the same structures at every breathing phase.

Phase 0's labels are the lungs (right = 1, left = 2, split at the lungs' midline), a 5-mm
nodule (3) deep in the lower left lung (a label only: the CT is not changed) and, in the ``local``
and ``clinical`` presets, the lesion painted into the CT (4, ``rso.simulation.lesion``). The
simulator makes phase K by pulling phase 0 through the exact inverse of the truth field; pulling
phase 0's labels through the same inverse (with ``rso.core.labels.propagate``) gives phase K's
labels. So a registration of the pair (fixed = phase 0, moving = phase K) that carries
``labels_phaseK`` onto phase 0 can be scored against ``labels_phase0``: Dice and HD95 of contour
propagation, with a known answer.

Cases simulated before these files existed get them on first use (``case_labels``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rso.core.imageio import read_displacement_field, write_bytes_atomically, write_image
from rso.core.labels import Label, color_table_text, propagate

LABELS = {
    1: Label(1, "right lung", (0.30, 0.80, 0.40)),
    2: Label(2, "left lung", (0.35, 0.55, 0.95)),
    3: Label(3, "nodule", (0.95, 0.55, 0.10)),
    4: Label(4, "lesion", (0.90, 0.20, 0.20)),
}
NODULE_DIAMETER_MM = 5.0
NODULE_HEIGHT = (
    0.35  # the nodule lies below this fraction of the lung's height: the lower lobe, where motion is largest
)


def reference_labels(lungs: sitk.Image, lesion: sitk.Image | None = None) -> sitk.Image:
    """Phase 0's labels (uint8, LABELS) from its lung mask, and an inserted lesion's label
    (rso.simulation.lesion)."""
    mask = sitk.GetArrayFromImage(lungs) > 0
    x = _axis_mm(lungs, 0)[None, None, :]  # LPS x grows to the patient's left
    midline = np.median(np.broadcast_to(x, mask.shape)[mask])
    labels = np.where(mask, np.where(x > midline, 2, 1), 0).astype(np.uint8)
    labels[_nodule(lungs, mask & (x > midline))] = 3
    if lesion is not None:
        labels[sitk.GetArrayViewFromImage(lesion) > 0] = 4
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(lungs)
    return image


def _axis_mm(image: sitk.Image, axis: int) -> np.ndarray:
    """LPS coordinate along one axis (x = 0, y = 1, z = 2) of an axis-aligned image's voxels."""
    return image.GetOrigin()[axis] + image.GetSpacing()[axis] * np.arange(image.GetSize()[axis])


def _nodule(reference: sitk.Image, left_lung: np.ndarray) -> np.ndarray:
    """A sphere of NODULE_DIAMETER_MM at the point of the lower left lung farthest from the lung's surface."""
    slices = np.nonzero(left_lung.any(axis=(1, 2)))[0]
    top = int(slices[0] + NODULE_HEIGHT * (slices[-1] - slices[0]))  # array axis 0 is z, growing superiorly
    depth = ndimage.distance_transform_edt(left_lung, sampling=reference.GetSpacing()[::-1])
    depth[top + 1 :] = 0
    level, row, column = np.unravel_index(np.argmax(depth), depth.shape)
    centre = np.array(
        [_axis_mm(reference, 0)[column], _axis_mm(reference, 1)[row], _axis_mm(reference, 2)[level]]
    )
    z, y, x = np.meshgrid(*[_axis_mm(reference, a) for a in (2, 1, 0)], indexing="ij")
    distance = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    return distance <= NODULE_DIAMETER_MM / 2


def phase_labels(labels0: sitk.Image, inverse: sitk.Image) -> sitk.Image:
    """Phase K's labels: phase 0's pulled through the inverse truth field (phase K -> phase 0 points)."""
    return propagate(labels0, inverse, labels0)


def write_labels(folder: Path, phase: int, labels: sitk.Image) -> Path:
    """labels_phase<k>.nii.gz and, once, labels_colors.txt (their names: NIfTI has no place for them)."""
    if not (folder / "labels_colors.txt").is_file():
        write_bytes_atomically(color_table_text(LABELS).encode(), folder / "labels_colors.txt")
    return write_image(labels, folder / f"labels_phase{phase}.nii.gz")


def case_labels(case_dir: str | Path, phase: int) -> Path:
    """The path of a case's labels at ``phase``, made (and kept) from its lung mask if the case lacks them."""
    from rso.simulation.motion import invert_field

    case_dir = Path(case_dir)
    path = case_dir / f"labels_phase{phase}.nii.gz"
    if path.is_file():
        return path
    labels0 = reference_labels(sitk.ReadImage(str(case_dir / "lung_mask.nii.gz")))
    if phase == 0:
        return write_labels(case_dir, 0, labels0)
    inverse, _ = invert_field(read_displacement_field(case_dir / f"truth_0_{phase}.nii.gz"))
    return write_labels(case_dir, phase, phase_labels(labels0, inverse))
