"""Simulated cases with ground truth: the plan's cases (simulated once, then cached) or named folders."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from rso.core.inputs import read_inputs
from rso.core.paths import cases_dir
from rso.errors import InputError
from rso.evaluation.bench.plan import HELD_OUT_ANATOMY, TRAINING_ANATOMY, TRAINING_SEEDS, BenchPlan
from rso.evaluation.case_sets import CaseSpec
from rso.evaluation.demo import EVALUATION_MASK
from rso.settings import PairInputs
from rso.simulation.fetch import DATA_FILES
from rso.simulation.simulate import geometry_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """A case folder and the pair taken from it."""

    name: str
    folder: Path
    anatomy: str
    seed: int | None
    moving_phase: int
    fixed_phase: int = 0
    mask: str = EVALUATION_MASK
    preset: str | None = None
    fit_mask: str | None = None  # a file of the case folder that every path fits inside (BenchPlan.fit_mask)

    def inputs(self) -> dict:
        folder, f, k = self.folder, self.fixed_phase, self.moving_phase
        geometries = _geometries(folder, (f, k))
        return read_inputs(
            PairInputs(
                fixed=str(folder / f"cbct_phase{f}.nii.gz"),
                moving=str(folder / f"cbct_phase{k}.nii.gz"),
                reference=str(folder / f"ct_phase{f}.nii.gz"),
                truth=str(folder / f"truth_{f}_{k}.nii.gz"),
                metrics_mask=str(folder / self.mask),
                fit_mask=str(folder / self.fit_mask) if self.fit_mask else None,
                fixed_geometry=str(geometries[0]) if geometries[0] else None,
                moving_geometry=str(geometries[1]) if geometries[1] else None,
            )
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "anatomy": self.anatomy,
            "seed": self.seed,
            "preset": self.preset,
            "held_out": self.anatomy == HELD_OUT_ANATOMY,
            "fixed_phase": self.fixed_phase,
            "moving_phase": self.moving_phase,
            "fixed": f"cbct_phase{self.fixed_phase}",
            "moving": f"cbct_phase{self.moving_phase}",
            "reference": f"ct_phase{self.fixed_phase} (clean CT)",
            "evaluation_mask": self.mask,
            "fit_mask": self.fit_mask,
            # The bundled model saw this patient (with other breathing seeds) in training.
            "training_anatomy": self.anatomy in TRAINING_ANATOMY,
            "training_case": self.anatomy in TRAINING_ANATOMY and self.seed in TRAINING_SEEDS,
        }


def _geometries(folder: Path, phases: tuple[int, int]) -> tuple[Path | None, Path | None]:
    """The pair's geometry files, as a user with the scan gives them: an FDK case's are matched, a TV
    case's describe the scan (matching off, the scan's rule on native RSO; rso.core.projection.scan)."""
    paths = tuple(geometry_path(folder, phase) for phase in phases)
    return (None, None) if any(path is None for path in paths) else paths


def resolve_cases(plan: BenchPlan) -> list[Case]:
    """The plan's cases, simulated once and cached (or the explicit folders it names)."""
    if plan.case_dirs:
        cases = [_case_from_folder(Path(folder), plan.moving_phase) for folder in plan.case_dirs]
    else:
        cases = [_case_from_spec(spec) for spec in plan.cases]
    for case in cases:
        if plan.fit_mask and not (case.folder / plan.fit_mask).is_file():
            raise InputError(
                f"case {case.folder} has no {plan.fit_mask} to fit inside (a cone-beam case has one)"
            )
    return [replace(case, mask=plan.evaluation_mask, fit_mask=plan.fit_mask) for case in cases]


def _case_from_folder(folder: Path, moving_phase: int | None) -> Case:
    info = _case_json(folder)
    k = info["phases"] // 2 if moving_phase is None else moving_phase
    _check_phase(folder, info, k)
    source = Path(info.get("source", {}).get("path", "")).name
    anatomy = {d.filename: d.key for d in DATA_FILES}.get(source, "unknown")
    return Case(f"{folder.name}-phase{k}", folder, anatomy, info.get("seed"), k)


def _case_json(folder: Path) -> dict:
    path = folder / "case.json"
    if not path.is_file():
        raise InputError(
            f"{folder} is not a simulated case (no case.json); make one with rso-registration simulate"
        )
    return json.loads(path.read_text())


def _check_phase(folder: Path, info: dict, phase: int) -> None:
    made = info.get("phases_made", range(info["phases"]))
    if not 1 <= phase < info["phases"] or phase not in made:
        raise InputError(f"moving phase {phase} is not among the phases made for case {folder}: {list(made)}")


def _case_from_spec(spec: CaseSpec) -> Case:
    folder = case_folder(spec.anatomy, spec.seed, spec.preset, spec.moving_phase)
    _check_phase(folder, _case_json(folder), spec.moving_phase)
    return Case(spec.name, folder, spec.anatomy, spec.seed, spec.moving_phase, preset=spec.preset)


def case_folder(anatomy: str, seed: int, preset: str = "standard", phase: int | None = None) -> Path:
    """A case in the shared case cache, simulated on first use (only phase 0 and ``phase``, when given).

    The demo cases (lung2 seed 0, each demo scanner's preset) are reused, and so are, for the standard
    preset, the cases scripts/build_demo_model.py made (named train-*, held-out ones included).
    """
    from rso.evaluation.demo import DEMO_PATIENT, DEMO_SEED, demo_case
    from rso.options import DEMO_SCANNERS
    from rso.simulation.fetch import fetch_data
    from rso.simulation.simulate import SimulationParams, simulate_case

    cases = cases_dir()
    if (anatomy, seed) == (DEMO_PATIENT, DEMO_SEED) and preset in DEMO_SCANNERS:
        return demo_case(preset)
    if preset == "standard":
        for prefix in ("train", "heldout", "bench"):
            if ((folder := cases / f"{prefix}-{anatomy}-seed{seed}") / "case.json").is_file():
                return folder
    folder = cases / (f"bench-{anatomy}-{preset}-seed{seed}" + (f"-phase{phase}" if phase else ""))
    if (folder / "case.json").is_file():
        return folder
    sources = fetch_data()
    if anatomy not in sources:
        raise InputError(f"unknown anatomy {anatomy!r}; choose one of {sorted(sources)}")
    log.info("simulating case %s (once; cached in %s)", folder.name, folder)
    return simulate_case(
        sources[anatomy],
        folder,
        phases=10,
        seed=seed,
        params=SimulationParams.preset(preset),
        overwrite=True,
        only=[phase] if phase else None,
    )
