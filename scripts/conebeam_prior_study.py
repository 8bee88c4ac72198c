"""Would a prior or a TV reconstruction remove the streaks that hide a cone-beam box's motion? (#20)

For each cone-beam case of the training anatomies (``--case DIR[:K]``, made by ``rso-registration
simulate --preset xvi|truebeam``), the native similarity's gain at the true correction (as in
``scripts/conebeam_streak_study.py``: two misaligned and two control boxes of 40 mm on the general
model's field) for these image pairs:

* ``cbct`` and ``matched``: the case's phases as given, and artefact-matched (what native RSO compares);
* ``mkb`` and ``mkb_matched``: McKinnon-Bates phases. The case's whole acquisition is simulated again
  (every phase's projections, with the case's seed), the prior is the FDK of all of them, and each phase
  is the prior plus the FDK of its own projections minus the prior's (McKinnon and Bates, IEEE Trans
  Biomed Eng 1981; Leng et al., Med Phys 2008): a prior from the projections, which ``rso-registration
  phases`` has and a pair of phase images has not;
* ``tissue``: each phase as given minus the streaks its own geometry casts from a tissue-class image
  of it (air, lung and soft tissue at their median HU, bone as it is; classes from the image after 2 mm
  smoothing), the idea of normalised metal artefact reduction applied to undersampling streaks;
* ``tv`` and ``tv_matched``: each phase reconstructed from its own projections (the whole acquisition
  simulated again, as for ``mkb``) by the product's total-variation reconstruction
  (``rso.core.projection.tv_reconstruct``, what ``rso-registration phases --reconstruction tv`` does),
  as given and artefact-matched;
* ``ideal_one_geometry``: both CT phases through the fixed phase's geometry (the bound).

Per case also how far the fixed and moving images of ``cbct``, ``mkb``, ``tissue`` and ``tv`` are from
their CT phases in the lungs (RMS, HU, both smoothed by 2 mm): how much of the streaks each removes.

With ``--phases-out DIR`` each case's McKinnon-Bates and TV phases are written as case folders under
``DIR/mkb`` and ``DIR/tv`` (the rest of the case linked), for ``scripts/conebeam_study.py`` to run ISO
and native RSO on.

    python scripts/conebeam_prior_study.py --case DIR ... --out bench/sweep/conebeam-priors/study.json

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_streak_study import read  # noqa: E402
from conebeam_study import case_inputs, case_spec  # noqa: E402
from streak_study import SETTINGS, box_row, summarise  # noqa: E402

from rso.core.imageio import read_image, write_image  # noqa: E402
from rso.core.projection import Placement, fdk, forward_project, mu_to_hu, tv_reconstruct  # noqa: E402
from rso.core.projection.matching import match_artefacts, reproject  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402
from rso.simulation.clinical import Acquisition, ClinicalMotion, Physics, scanner_preset  # noqa: E402
from rso.simulation.grid import working_ct  # noqa: E402
from rso.simulation.simulate import SimulationParams, make_phases  # noqa: E402

TISSUE_THRESHOLDS_HU = (-500.0, 250.0)  # air and lung | soft tissue | bone, after 2 mm smoothing


def whole_scan(folder: Path, moving: int) -> tuple[Acquisition, np.ndarray]:
    """The case's acquisition simulated again with its seed, and every projection's line integrals."""
    case = json.loads((folder / "case.json").read_text())
    params = SimulationParams.preset(case["scanner"])
    source = read_image(case["source"]["path"], "CT")
    ct = working_ct(source, params.spacing_mm, params.crop_margin_mm, params.masks)
    times = [k / case["phases"] for k in case["phases_made"]]
    made, model, _, _ = make_phases(
        ct, times, case["seed"], params.motion, params.masks, indices=case["phases_made"]
    )
    preset = scanner_preset(case["scanner"])
    motion = ClinicalMotion(model)
    scan = Acquisition(
        made[0].ct, motion, case["phases"], preset, Physics(), case["seed"], Placement.default()
    )
    # The case's own phases first: the motion states' warm starts then repeat the case's exactly.
    order = [0, moving, *(k for k in range(case["phases"]) if k not in (0, moving))]
    lines = np.empty((scan.geometry.count, *scan.detector.shape), np.float32)
    for k in order:
        lines[scan.selected(k)] = scan.lines(k)[0]
    return scan, lines


def mckinnon_bates(scan: Acquisition, lines: np.ndarray, moving: int) -> tuple[sitk.Image, sitk.Image]:
    """The case's fixed and moving phases reconstructed with a prior from the whole acquisition (HU)."""
    prior = fdk(lines, scan.geometry, scan.detector, scan.grid)  # mu on the RTK-frame grid
    phases = []
    for k in (0, moving):
        views = scan.geometry.subset(scan.selected(k))
        residual = lines[scan.selected(k)] - forward_project(prior, views, scan.detector)
        mu = prior + fdk(residual, views, scan.detector, scan.grid)
        phases.append(mu_to_hu(scan.placement.from_rtk(mu, scan.ct0)))
    return phases[0], phases[1]


def total_variation(scan: Acquisition, lines: np.ndarray, moving: int) -> tuple[sitk.Image, sitk.Image]:
    """The case's fixed and moving phases by the product's TV reconstruction of their own projections (HU)."""
    phases = []
    for k in (0, moving):
        views = scan.geometry.subset(scan.selected(k))
        mu = tv_reconstruct(lines[scan.selected(k)], views, scan.detector, scan.grid)
        phases.append(mu_to_hu(scan.placement.from_rtk(mu, scan.ct0)))
    return phases[0], phases[1]


def tissue_destreaked(image: sitk.Image, geometry, placement) -> sitk.Image:
    """``image`` minus the streaks ``geometry`` casts from its tissue-class image (HU)."""
    classes = np.digitize(
        sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 2.0)), TISSUE_THRESHOLDS_HU
    )
    values = sitk.GetArrayFromImage(image)
    model = values.copy()  # bone as it is
    for c in range(len(TISSUE_THRESHOLDS_HU)):
        model[classes == c] = np.median(values[classes == c])
    tissue = sitk.GetImageFromArray(model)
    tissue.CopyInformation(image)
    return image - (reproject(tissue, geometry, placement) - tissue)


def lung_error(pair, cts, lungs: np.ndarray) -> list[float]:
    """RMS difference (HU) in the lungs of each image of ``pair`` from its CT phase, both smoothed by 2 mm."""
    smooth = lambda image: sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 2.0))  # noqa: E731
    return [round(float(np.sqrt(np.mean((smooth(i) - smooth(c))[lungs] ** 2))), 1) for i, c in zip(pair, cts)]


def write_case(folder: Path, moving: int, phases, out: Path) -> Path:
    """A case folder with ``phases`` (fixed, moving) in place of the case's, everything else linked."""
    target = out / folder.name
    target.mkdir(parents=True, exist_ok=True)
    written = {f"cbct_phase{k}.nii.gz" for k in (0, moving)}
    for path in folder.iterdir():
        if path.name not in written and not (target / path.name).exists():
            (target / path.name).symlink_to(path.resolve())
    for k, image in zip((0, moving), phases):
        write_image(sitk.Cast(sitk.Round(image), sitk.sitkInt16), target / f"cbct_phase{k}.nii.gz")
    return target


def image_pairs(session, folder: Path, phase: int, phases_out: Path | None) -> dict:
    """The study's image pairs for one case (see the module docstring), each (fixed, moving) in HU."""
    geometries, placement = session.pair.geometry, session.pair.placement
    scan, lines = whole_scan(folder, phase)
    started = time.perf_counter()
    mkb = mckinnon_bates(scan, lines, phase)
    print(f"{folder.name}: McKinnon-Bates phases in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    tv = total_variation(scan, lines, phase)
    print(f"{folder.name}: TV phases in {time.perf_counter() - started:.0f} s", flush=True)
    if phases_out is not None:
        write_case(folder, phase, mkb, phases_out / "mkb")
        write_case(folder, phase, tv, phases_out / "tv")
    given = (session.fixed, session.moving)
    cts = read(folder, "ct_phase0.nii.gz"), read(folder, f"ct_phase{phase}.nii.gz")
    return {
        "cbct": given,
        "matched": session.pair.compared_images(True),
        "mkb": mkb,
        "mkb_matched": match_artefacts(*mkb, geometries, placement),
        "tissue": tuple(tissue_destreaked(i, g, placement) for i, g in zip(given, geometries)),
        "tv": tv,
        "tv_matched": match_artefacts(*tv, geometries, placement),
        "ideal_one_geometry": tuple(reproject(ct, geometries[0], placement) for ct in cts),
        "ct": cts,
    }


def study(cases: list[str], out: Path, phases_out: Path | None) -> dict:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    rows, errors = [], {}
    for spec in cases:
        folder, phase = case_spec(spec)
        case = json.loads((folder / "case.json").read_text())
        session = start_session(engine, case_inputs(folder, phase), network=network)
        session.general()
        pairs = image_pairs(session, folder, phase, phases_out)
        lungs = sitk.GetArrayFromImage(read(folder, "lung_mask.nii.gz")) > 0.5
        cts = pairs.pop("ct")
        errors[folder.name] = {
            name: lung_error(pairs[name], cts, lungs) for name in ("cbct", "mkb", "tissue", "tv")
        }
        print(f"{folder.name}: lung error from the CT phases (HU) {errors[folder.name]}", flush=True)
        described = {"case": [folder.name, case["seed"], case["scanner"], phase]}
        for kind in ("misaligned", "control"):
            for index, box in enumerate(pick_boxes(session, kind, 2, 40.0, seed=case["seed"])):
                for name, pair in pairs.items():
                    row = {**described, "kind": kind, "box": index, "pair": name}
                    rows.append({**row, **box_row(session, pair, box)})
                print(f"{folder.name} {kind} {index} done", flush=True)
    report = {"settings": SETTINGS.to_dict(), "lung_error_hu": errors, "rows": rows}
    report["summary"] = summarise(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="DIR[:K]", help="a cone-beam case")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/conebeam-priors/study.json"))
    parser.add_argument("--phases-out", type=Path, help="write the McKinnon-Bates and TV cases here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    report = study(args.case, args.out, args.phases_out)
    for row in report["summary"]:
        print(row)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
