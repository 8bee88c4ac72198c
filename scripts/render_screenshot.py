#!/usr/bin/env python
"""Render the README screenshot offscreen from a real MRML scene (slicer-core, no Slicer app).

A registration runs through the module's own logic (engine in-process): general model, ISO, and
RSO on a Markups ROI. The axial slice view through the ROI then shows the fixed image, the
difference overlay (warped - fixed: red where the warped image is brighter, blue where darker)
and the ROI box, exactly as the module sets up Slicer's views.

    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow python scripts/render_screenshot.py \
        --out Resources/Screenshots/slice-view.png

The README's picture (``make screenshot``) is the demo's XVI-like cone-beam case of the held-out patient
(lung2 seed 0, phases 0 and 5, each with its RTK geometry, so ISO and RSO compare the artefact-matched
pair) with the bundled model, in the box the demo picks (where ISO-100 is worst):

    C=~/.cache/rso-registration/cases/demo-lung2-xvi-seed0
    python scripts/render_screenshot.py --out Resources/Screenshots/slice-view.png \
        --fixed $C/cbct_phase0.nii.gz --moving $C/cbct_phase5.nii.gz \
        --fixed-geometry $C/cbct_phase0_geometry.xml --moving-geometry $C/cbct_phase5_geometry.xml \
        --model RSORegistration/rso/resources/general_model.pt --grid 48,80,80 \
        --iso 100 --rso 60 --region 10.5 220.5 -222.6 50.8 260.7 -184.8

The lower left corner says what the last step did (the module's status line), declined or not.

``--evidence`` also writes the arrays the render test checks (the view without the ROI drawn, and
the |difference| under every pixel; the view with the det J quality map as the foreground, and
|det J - 1| under every pixel).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # before VTK makes a window
MODULE_DIR = Path(__file__).resolve().parents[1] / "RSORegistration"
sys.path.insert(0, str(MODULE_DIR))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

log = logging.getLogger("render_screenshot")


from rso.options import DEFAULT_RSO_MODE, RSO_MODES  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="Resources/Screenshots/slice-view.png", help="PNG to write")
    parser.add_argument("--evidence", help="also write the arrays the render test checks (.npz)")
    parser.add_argument("--size", type=int, nargs=2, default=(720, 560), metavar=("W", "H"))
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(48, 96, 96), metavar=("Z", "Y", "X"), help="demo image voxels"
    )
    parser.add_argument("--spacing", type=float, default=2.0, help="demo image spacing (mm)")
    parser.add_argument("--grid", default="32,64,64", help="model grid z,y,x")
    parser.add_argument("--channels", default="4,8,16,32,64", help="untrained network width (no model file)")
    parser.add_argument(
        "--model", default="", help="a trained general model checkpoint (overrides --channels)"
    )
    parser.add_argument("--iso", type=int, default=5, help="ISO iterations")
    parser.add_argument("--rso", type=int, default=5, help="RSO iterations")
    parser.add_argument("--rso-mode", default=DEFAULT_RSO_MODE, choices=RSO_MODES, help="RSO mode")
    parser.add_argument("--fixed", help="fixed image file (default: the synthetic demo pair)")
    parser.add_argument("--moving", help="moving image file")
    parser.add_argument("--fixed-geometry", help="the fixed phase's RTK projection geometry (XML)")
    parser.add_argument("--moving-geometry", help="the moving phase's RTK projection geometry (XML)")
    parser.add_argument(
        "--region",
        type=float,
        nargs=6,
        metavar=("R1", "A1", "S1", "R2", "A2", "S2"),
        help="ROI in RAS mm (default: around the demo nodule)",
    )
    return parser.parse_args(argv)


def build_scene(args, cache_dir: Path):
    """The headless scene after general -> ISO -> RSO on the ROI; returns (app, logic, roi)."""
    import torch

    from RSORegistrationLib.backends import InProcessBackend
    from RSORegistrationLib.headless import new_scene
    from RSORegistrationLib.logic import RegistrationLogic
    from RSORegistrationLib.phantom import add_phantom_volumes, phantom_pair
    from RSORegistrationLib.volumes import volume_from_image

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    app = new_scene()
    if args.fixed:
        fixed = volume_from_image(app.scene, sitk.ReadImage(args.fixed, sitk.sitkFloat32), "fixed")
        moving = volume_from_image(app.scene, sitk.ReadImage(args.moving, sitk.sitkFloat32), "moving")
        region = args.region
    else:
        fixed, moving, pair = add_phantom_volumes(app.scene, phantom_pair(tuple(args.shape), args.spacing))
        region = args.region or pair.region_ras()
    roi = app.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "region")
    low, high = np.array(region[:3]), np.array(region[3:])
    roi.SetCenter(((low + high) / 2).tolist())
    roi.SetSize((high - low).tolist())
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=cache_dir)
    model = {"modelPath": args.model} if args.model else {"modelChannels": args.channels}
    # both files turn artefact matching on; RunParameters.check refuses one without the other
    geometry = {
        "fixedGeometryFile": args.fixed_geometry or "",
        "movingGeometryFile": args.moving_geometry or "",
    }
    logic.run(
        fixed,
        moving,
        [roi],
        iso_iterations=args.iso,
        rso_iterations=args.rso,
        gridShape=args.grid,
        device="cpu",
        rsoMode=args.rso_mode,
        **model,
        **geometry,
    )
    display = fixed.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1500.0, -250.0)  # lung and soft tissue both readable
    display.SetInterpolate(True)
    return app, logic, roi


def annotate(view, text: str, status: str) -> None:
    """The legend in the upper left corner, the module's status line in the lower left."""
    import vtk

    corner = vtk.vtkCornerAnnotation()
    corner.SetText(2, text)  # upper left
    corner.SetText(0, status)  # lower left
    corner.SetMaximumFontSize(15)
    text_property = corner.GetTextProperty()
    text_property.SetColor(0.95, 0.95, 0.95)
    text_property.SetBackgroundColor(0.0, 0.0, 0.0)  # readable over the noise outside the body
    text_property.SetBackgroundOpacity(0.7)
    view.renderer.AddViewProp(corner)


def render(app, logic, roi, size, out: Path, evidence: Path | None) -> dict:
    from rso.core.geometry import ras_to_lps
    from RSORegistrationLib.display import NEUTRAL_ATTRIBUTE
    from RSORegistrationLib.headless import OffscreenSliceView
    from RSORegistrationLib.roi import roi_ras_box
    from RSORegistrationLib.volumes import image_from_volume

    params = logic.parameters()
    view = OffscreenSliceView(app, "Red", tuple(size))
    view.composite.SetBackgroundVolumeID(params.fixedVolume.GetID())  # the module's layout, on this view
    view.composite.SetForegroundVolumeID(params.differenceVolume.GetID())
    view.composite.SetForegroundOpacity(1.0)
    view.composite.SetCompositing(view.composite.Add)
    view.set_orientation("Axial")
    view.fit()
    box = roi_ras_box(roi)
    centre = [(box[i] + box[i + 3]) / 2 for i in range(3)]
    view.jump_to(centre)

    roi.GetDisplayNode().SetVisibility(False)
    overlay = view.render()  # the overlay alone, for the test
    roi.GetDisplayNode().SetVisibility(True)
    neutral_hu = float(params.differenceVolume.GetAttribute(NEUTRAL_ATTRIBUTE))
    annotate(
        view,
        "fixed + difference (warped - fixed)\n"
        f"red: warped brighter, blue: darker\nblack: they agree within {neutral_hu:.0f} HU\n"
        "box: the region given to RSO",
        textwrap.fill(logic.status, 64),
    )
    view.save_png(out)
    corners = [view.ras_to_pixel([box[0], box[1], centre[2]]), view.ras_to_pixel([box[3], box[4], centre[2]])]
    columns, rows = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
    facts = {
        "roi_pixels": np.array([columns[0], rows[0], columns[1], rows[1]]),
        "neutral_hu": neutral_hu,
    }
    if evidence is not None:
        difference = image_from_volume(params.differenceVolume)
        near = sitk.GrayscaleDilate(
            sitk.Abs(difference), [1, 1, 1]
        )  # the largest |difference| a pixel may show
        facts["difference_near_pixel"] = sample_under_pixels(view, near, ras_to_lps)
        facts["difference_at_pixel"] = sample_under_pixels(view, sitk.Abs(difference), ras_to_lps)
        shot = view.render()
        facts.update(quality_evidence(view, params, roi, ras_to_lps))
        np.savez_compressed(evidence, overlay=overlay, shot=shot, **facts)
    return facts


def quality_evidence(view, params, roi, ras_to_lps) -> dict:
    """The same view with the det J map as the foreground, and |det J - 1| under each pixel."""
    from RSORegistrationLib.display import JACOBIAN_NEUTRAL
    from RSORegistrationLib.volumes import image_from_volume

    view.composite.SetForegroundVolumeID(params.jacobianVolume.GetID())
    roi.GetDisplayNode().SetVisibility(False)
    rendered = view.render()
    roi.GetDisplayNode().SetVisibility(True)
    view.composite.SetForegroundVolumeID(params.differenceVolume.GetID())
    deviation = sitk.Abs(image_from_volume(params.jacobianVolume) - 1.0)
    return {
        "jacobian_overlay": rendered,
        "jacobian_neutral": JACOBIAN_NEUTRAL,
        # |det J - 1| at the voxel under each pixel, and the largest one it may show (nearest-voxel display)
        "jacobian_deviation_at_pixel": sample_under_pixels(view, deviation, ras_to_lps),
        "jacobian_deviation_near_pixel": sample_under_pixels(
            view, sitk.GrayscaleDilate(deviation, [1, 1, 1]), ras_to_lps
        ),
    }


def sample_under_pixels(view, image: sitk.Image, ras_to_lps) -> np.ndarray:
    """The image's nearest voxel value under each pixel centre of the view (NaN outside the image)."""
    width, height = view.window.GetSize()
    matrix = view.slice_node.GetXYToRAS()
    xy_to_ras = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
    column, row = np.meshgrid(np.arange(width), np.arange(height))
    xy = np.stack([column, height - 1 - row, np.zeros_like(column), np.ones_like(column)], axis=-1).astype(
        float
    )
    lps = ras_to_lps((xy @ xy_to_ras.T)[..., :3])
    direction = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    index = np.rint((lps - np.array(image.GetOrigin())) @ np.linalg.inv(direction).T).astype(int)  # (i, j, k)
    size = np.array(image.GetSize())
    inside = np.all((index >= 0) & (index < size), axis=-1)
    values = sitk.GetArrayViewFromImage(image)
    sampled = np.full((height, width), np.nan)
    i, j, k = index[inside].T
    sampled[inside] = values[k, j, i]
    return sampled


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rso-screenshot-") as cache:
        app, logic, roi = build_scene(args, Path(cache))
        render(app, logic, roi, args.size, out, Path(args.evidence) if args.evidence else None)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
