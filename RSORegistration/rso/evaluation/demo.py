"""`demo`: the paper's comparison on simulated CBCT cases of a real patient, with ground truth.

general -> ISO-500 against general -> ISO-100 -> RSO (the default mode) on the box where ISO-100
leaves the anatomy worst aligned (a clinician who spots it; ``--roi`` overrides it). RMSE is measured
against the *clean* CT of the fixed phase and TRE against the simulator's true field, which the paper
could not do, both inside the lungs. The demo patient is never part of the bundled model's training data.
The same breathing is scanned twice, as by each of the two machines the simulator models
(``rso.options.DEMO_SCANNERS``): where the scan lets RSO see the motion, and where its streaks hide it and the
guard declines (docs/decisions.md, "The demo shows both scanners").
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rso.core.imageio import write_bytes_atomically
from rso.core.inputs import read_inputs
from rso.core.paths import cases_dir
from rso.core.results import check_output_folder, write_results
from rso.core.summary import format_table
from rso.core.workflow import build_network, start_session
from rso.evaluation.box_kinds import pick_boxes
from rso.options import DEMO_SCANNERS, PAPER_RSO_ITERATIONS
from rso.settings import EngineSettings, PairInputs, RSOSettings
from rso.simulation.fetch import fetch_data

log = logging.getLogger(__name__)

DEMO_PATIENT = "lung2"  # held out: the bundled model is trained on the other anatomy
DEMO_SEED = 0
# Clinical cone-beam 4D CBCT (RTK): views clustered by an irregular breathing trace, noise and scatter; each
# phase with its projection geometry, so the steps compare matched images. The demo runs one case per
# scanner of DEMO_SCANNERS (rso.options), the same breathing.
# The demo case of the scripts and benchmarks that take one (scale, fp32 speed, contours): the half fan.
DEMO_PRESET = "truebeam"
DEMO_PHASES = 10
FIXED_PHASE, MOVING_PHASE = 0, 5  # end exhale and end inhale
# Metrics inside the lungs: there the anatomy shows the motion; in the homogeneous abdomen no
# intensity-based method can see the true motion, so TRE there would measure the simulator.
EVALUATION_MASK = "lung_mask.nii.gz"


@dataclass(frozen=True)
class DemoPlan:
    iso_long: int = 500
    iso_short: int = 100
    rso: int = PAPER_RSO_ITERATIONS  # the network RSO modes' iterations; native RSO keeps its own default
    box_size_mm: float = 40.0
    # Where the box goes (rso.evaluation.box_kinds): "misaligned" stands in for a clinician who spots the
    # worst-aligned anatomy after ISO-short (the truth only places the box).
    box_kind: str = "misaligned"

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(iso_long=50, iso_short=10, rso=40)


def demo_case(preset: str = DEMO_PRESET) -> Path:
    """The simulated demo case of one scanner preset, made once and then read from the cache."""
    from rso.simulation.simulate import SimulationParams, simulate_case

    folder = cases_dir() / f"demo-{DEMO_PATIENT}-{preset}-seed{DEMO_SEED}"
    if not (folder / "case.json").is_file():
        ct_path = fetch_data()[DEMO_PATIENT]
        log.info("simulating the %s demo case from %s (once; cached in %s)", preset, ct_path.name, folder)
        params = SimulationParams.preset(preset)
        simulate_case(
            ct_path,
            folder,
            phases=DEMO_PHASES,
            seed=DEMO_SEED,
            params=params,
            overwrite=True,
            progress=True,
            only=[MOVING_PHASE],
        )
    return folder


def run_demo(
    plan: DemoPlan,
    engine: EngineSettings,
    rso: RSOSettings,
    out: Path,
    roi: list[float] | None = None,
    progress=None,
    scanners: tuple[str, ...] = DEMO_SCANNERS,
) -> dict[str, list[dict]]:
    """Both arms on each scanner's demo case; prints and returns the comparison rows per scanner and writes
    each case's results to ``out``/<scanner>."""
    check_output_folder(out)
    for scanner in scanners:
        check_output_folder(out / scanner)
    network = build_network(engine)
    return {
        scanner: demo_on_case(plan, engine, network, rso, demo_case(scanner), out / scanner, roi, progress)
        for scanner in scanners
    }


def demo_on_case(
    plan: DemoPlan, engine: EngineSettings, network, rso: RSOSettings, case: Path, out: Path, roi, progress
) -> list[dict]:
    """Both arms on one demo case; prints the comparison and writes the results to ``out``."""
    from rso.simulation.simulate import geometry_path

    inputs = read_inputs(
        PairInputs(
            fixed=str(case / f"cbct_phase{FIXED_PHASE}.nii.gz"),
            moving=str(case / f"cbct_phase{MOVING_PHASE}.nii.gz"),
            reference=str(case / f"ct_phase{FIXED_PHASE}.nii.gz"),
            truth=str(case / f"truth_{FIXED_PHASE}_{MOVING_PHASE}.nii.gz"),
            metrics_mask=str(case / EVALUATION_MASK),
            fixed_geometry=str(geometry_path(case, FIXED_PHASE)),
            moving_geometry=str(geometry_path(case, MOVING_PHASE)),
        )
    )
    if rso.mode != "native":
        rso = replace(rso, iterations=plan.rso)
    iso_arm = start_session(engine, inputs, network=network)
    iso_arm.general()
    iso_arm.iso(plan.iso_long, progress=progress)
    rso_arm = start_session(engine, inputs, network=network)
    rso_arm.general()
    rso_arm.iso(plan.iso_short, progress=progress)
    box = rso_arm.box_from_ras(roi) if roi else pick_boxes(rso_arm, plan.box_kind, 1, plan.box_size_mm)[0]
    record = rso_arm.rso(box, rso, progress=progress)
    if record.declined:
        print(f"\nRSO declined: {record.declined}")
    rows = comparison_rows(iso_arm, rso_arm, box, plan, record)
    print(
        f"\nDemo case {case.name}: CBCT phase {FIXED_PHASE} (fixed) <- phase {MOVING_PHASE} (moving), "
        f"box {box.ras_corners} RAS mm\n"
    )
    print(format_table(rows))
    write_demo_outputs(out, case, iso_arm, rso_arm, box, rows, plan)
    return rows


def comparison_rows(iso_arm, rso_arm, box, plan: DemoPlan, rso) -> list[dict]:
    """One row per result, all measured in the same box against the clean fixed CT and the truth.

    ``rso`` is the RSO step's record; a declined step leaves ISO-short's field in its row.
    """
    general, short = rso_arm.history[:2]
    mode = rso.params["mode"] + ("" if rso.params["mode"] == "native" else f"/{rso.params['compose']}")
    name = f"ISO-{plan.iso_short} + RSO-{rso.params['iterations']} {mode}" + (
        " (declined)" if rso.declined else ""
    )
    candidates = [
        ("initial (no registration)", None, 0.0),
        ("general model", iso_arm.state_field(1), general.seconds),
        (f"ISO-{plan.iso_long}", iso_arm.field_voxels, iso_arm.history[1].seconds),
        (f"ISO-{plan.iso_short}", rso_arm.state_field(2), short.seconds),
        (name, rso_arm.field_voxels, short.seconds + rso.seconds),
    ]
    rows = []
    for name, field_voxels, seconds in candidates:
        metrics = rso_arm.metrics(field_voxels if field_voxels is not None else rso_arm.state_field(0), box)
        rows.append(
            {
                "result": name,
                "rmse_hu": metrics["rmse_hu"],
                "rmse_hu_box": metrics["rmse_hu_box"],
                "tre_mm": metrics["tre_mm"]["mean"],
                "tre_mm_box": metrics["tre_mm_box"]["mean"],
                "tre_mm_box_p95": metrics["tre_mm_box"]["p95"],
                "folding_fraction": metrics["folding_fraction"],
                "seconds": round(seconds, 1),
            }
        )
    return rows


def write_demo_outputs(out: Path, case: Path, iso_arm, rso_arm, box, rows, plan: DemoPlan) -> None:
    from rso.evaluation.figures import comparison_figure  # matplotlib only when needed

    write_results(iso_arm, out / "iso", figure=False)
    write_results(rso_arm, out / "rso", figure=True)
    summary = {
        "case": str(case),
        "plan": asdict(plan),
        "box_ras": box.ras_corners,
        "rows": rows,
        "model": rso_arm.model_source,
        "grid": list(rso_arm.grid.shape),
    }
    write_bytes_atomically(json.dumps(summary, indent=1).encode(), out / "demo.json")
    figure = comparison_figure(iso_arm, rso_arm, box, rows, out / "demo.png")
    log.info(
        "wrote %s, %s and the two arms' results in %s/iso and %s/rso", figure, out / "demo.json", out, out
    )
