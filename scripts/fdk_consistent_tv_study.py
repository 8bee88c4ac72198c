"""Can a phase image and its geometry file alone give what a TV reconstruction of the projections gives? (#20)

A TV reconstruction of each phase from its own projections takes the half-fan (TrueBeam-like) streaks out
and shows the motion in a box again (docs/decisions.md, "A TV reconstruction of each phase"); a user with
only the phase images and their geometry files has no projections. FDK is linear, though: a phase image
is A = R p, with R the FDK of the geometry's views and p the unknown projections. For any volume x,
x + R(p - P x) = x + A - R P x, so FDK-based iterative reconstruction (x <- x + s (A - R P x)) needs only
the image. Each iteration here is that step inside the scan's field of view, then a total-variation
denoising (Chambolle's, scikit-image), then mu >= 0: a proximal-gradient fit of "the least-TV volume
whose FDK through the phase's own geometry is the image". Outside the field of view the image stays as
given (FDK has no complete data there, and the step diverges on a truncated cxr case without this).

For each TrueBeam-like training case (``--case DIR[:K]``): the lungs' error from the CT phases, and the
native similarity's gain at the true correction in two misaligned and two control boxes
(``scripts/conebeam_streak_study.py``'s measure), for the pairs ``cbct`` (as given), ``matched`` (what
native RSO compares), ``consistent_tv`` and ``consistent_tv_matched``.

    python scripts/fdk_consistent_tv_study.py --case DIR ... --out bench/sweep/fdk-consistent-tv/study.json

Step 0.5 (1.0 diverges: R P has eigenvalues near 3; FISTA's momentum diverged too), TV weight 0.03 in
units of water's mu (0.015-0.12 tried on chest_crop_a seed 22 and cxr seed 12: lung error lowest at 0.03),
10 iterations (20 lowered the fixed phase's error and raised the moving one's). lung2 is never used.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from skimage.restoration import denoise_tv_chambolle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_prior_study import lung_error  # noqa: E402
from conebeam_streak_study import read, run_case_study  # noqa: E402
from conebeam_study import case_inputs, case_spec  # noqa: E402
from streak_study import box_row, summarise  # noqa: E402

from rso.core.projection import mu_to_hu  # noqa: E402
from rso.core.projection.conebeam import FDK_HANN_CUT, Detector, fdk, field_of_view, forward_project  # noqa: E402
from rso.core.projection.matching import match_artefacts  # noqa: E402
from rso.core.projection.units import MU_WATER_PER_MM, hu_to_mu  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.bench.arms import write_json  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

STEP, TV_WEIGHT, ITERATIONS = 0.5, 0.03, 10


def consistent_tv(image: sitk.Image, geometry, placement) -> sitk.Image:
    """The least-TV volume whose FDK through ``geometry`` is ``image`` (HU in, HU out, same grid)."""
    mu = hu_to_mu(placement.to_rtk(image), False)
    detector = Detector.covering(mu, geometry)
    given = sitk.GetArrayFromImage(mu) / MU_WATER_PER_MM  # water units: the TV weight is for order 1

    def as_image(x: np.ndarray) -> sitk.Image:
        volume = sitk.GetImageFromArray((x * MU_WATER_PER_MM).astype(np.float32))
        volume.CopyInformation(mu)
        return volume

    def reprojected(x: np.ndarray) -> np.ndarray:
        volume = as_image(x)
        lines = forward_project(volume, geometry, detector)
        return sitk.GetArrayFromImage(fdk(lines, geometry, detector, volume, FDK_HANN_CUT)) / MU_WATER_PER_MM

    outside = ~field_of_view(mu, geometry, detector)
    x = given.copy()
    for _ in range(ITERATIONS):
        x = denoise_tv_chambolle(x - STEP * (reprojected(x) - given), weight=TV_WEIGHT)
        x = np.maximum(x, 0.0)
        x[outside] = given[outside]
    return placement.from_rtk(mu_to_hu(as_image(x)), image)


def study(cases: list[str], out: Path) -> dict:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    rows, errors, seconds = [], {}, {}
    for spec in cases:
        folder, phase = case_spec(spec)
        case = json.loads((folder / "case.json").read_text())
        session = start_session(engine, case_inputs(folder, phase), network=network)
        session.general()
        geometries, placement = session.pair.geometry, session.pair.placement
        given = (session.fixed, session.moving)
        started = time.perf_counter()
        recovered = tuple(consistent_tv(i, g, placement) for i, g in zip(given, geometries))
        seconds[folder.name] = round(time.perf_counter() - started, 1)
        pairs = {
            "cbct": given,
            "matched": session.pair.compared_images(True),
            "consistent_tv": recovered,
            "consistent_tv_matched": match_artefacts(*recovered, geometries, placement),
        }
        cts = read(folder, "ct_phase0.nii.gz"), read(folder, f"ct_phase{phase}.nii.gz")
        lungs = sitk.GetArrayFromImage(read(folder, "lung_mask.nii.gz")) > 0.5
        errors[folder.name] = {
            name: lung_error(pairs[name], cts, lungs) for name in ("cbct", "consistent_tv")
        }
        print(f"{folder.name}: {seconds[folder.name]} s, lung error (HU) {errors[folder.name]}", flush=True)
        described = {"case": [folder.name, case["seed"], case["scanner"], phase]}
        for kind in ("misaligned", "control"):
            for index, box in enumerate(pick_boxes(session, kind, 2, 40.0, seed=case["seed"])):
                for name, pair in pairs.items():
                    rows.append(
                        {**described, "kind": kind, "box": index, "pair": name, **box_row(session, pair, box)}
                    )
    recipe = {"step": STEP, "tv_weight_water_units": TV_WEIGHT, "iterations": ITERATIONS}
    report = {"recipe": recipe, "seconds_per_pair": seconds, "lung_error_hu": errors, "rows": rows}
    report["summary"] = summarise(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    return report


def main() -> None:
    run_case_study(__doc__, "bench/sweep/fdk-consistent-tv/study.json", study)


if __name__ == "__main__":
    main()
