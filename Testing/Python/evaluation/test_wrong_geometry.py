"""The slightly wrong projection geometries (rso.evaluation.wrong_geometry) and how the benchmark deals
them out to its cases (one perturbation per case, in turn), and the CLI flag that turns them off."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rso.core.projection.geometry import ProjectionGeometry
from rso.core.projection.scan import PhaseScan
from rso.evaluation import case_sets
from rso.evaluation.bench import plan as bench
from rso.evaluation.wrong_geometry import WRONG_GEOMETRIES, wrong_geometries

# A phase bin of a 4D scan: clusters of views 1 degree apart (one per breathing cycle), 30-40 degrees between.
CLUSTER_SIZES = (5, 8, 4, 6)


def clustered_geometry() -> ProjectionGeometry:
    angles, start = [], 10.0
    for size in CLUSTER_SIZES:
        angles += [start + i for i in range(size)]
        start += size + 35.0
    return ProjectionGeometry.circular(1000.0, 1536.0, angles, offset_x=-160.0)


def test_each_perturbation_is_what_its_name_says():
    geometry = clustered_geometry()
    wrong = wrong_geometries(geometry)
    assert tuple(wrong) == WRONG_GEOMETRIES == ("angles +0.5 deg", "distances +1 %", "one cluster missing")

    shifted = wrong["angles +0.5 deg"]
    np.testing.assert_allclose(np.subtract(shifted.gantry_deg, geometry.gantry_deg), 0.5, atol=1e-9)
    assert shifted.source_to_isocenter_mm == geometry.source_to_isocenter_mm
    assert shifted.projection_offset_x_mm == geometry.projection_offset_x_mm

    scaled = wrong["distances +1 %"]
    np.testing.assert_allclose(scaled.source_to_isocenter_mm, 1010.0)
    np.testing.assert_allclose(scaled.source_to_detector_mm, 1536.0 * 1.01)
    assert scaled.gantry_deg == geometry.gantry_deg

    missing = wrong["one cluster missing"]
    largest = CLUSTER_SIZES.index(max(CLUSTER_SIZES))
    assert missing.count == geometry.count - max(CLUSTER_SIZES) == sum(CLUSTER_SIZES) - 8
    first = sum(CLUSTER_SIZES[:largest])
    gone = set(geometry.gantry_deg[first : first + CLUSTER_SIZES[largest]])
    assert gone.isdisjoint(missing.gantry_deg)
    assert set(missing.gantry_deg) == set(geometry.gantry_deg) - gone
    assert missing.source_to_detector_mm == geometry.source_to_detector_mm[: missing.count]


def test_evenly_spread_views_have_no_cluster_to_remove():
    """A parallel-beam case's phase: views every 3 degrees, one cluster, which cannot go."""
    even = ProjectionGeometry.circular(1000.0, 0.0, np.arange(0.0, 180.0, 3.0))
    assert tuple(wrong_geometries(even)) == WRONG_GEOMETRIES[:2]
    assert bench.wrong_geometry_for(2, even) is None
    assert bench.wrong_geometry_for(3, even)[0] == "angles +0.5 deg"


def test_the_plan_deals_the_perturbations_out_in_turn():
    geometry = clustered_geometry()
    plan = bench.BenchPlan()
    picked = [bench.wrong_geometry_for(position, geometry) for position in range(len(plan.cases))]
    names = [name for name, _ in picked]
    assert names == list(WRONG_GEOMETRIES) * 2  # six cases: each perturbation twice
    assert picked[0][1] == wrong_geometries(geometry)["angles +0.5 deg"]
    assert plan.wrong_geometry is True
    label = bench.labels(plan)[bench.WRONG_GEOMETRY_ISO_ARM]
    assert bench.wrong_geometry_label(label, names[1]) == "ISO-100, wrong geometry (distances +1 %)"


def test_no_wrong_geometry_turns_the_arms_off():
    from rso.cli import build_parser
    from rso.cli.bench import plan_from_args

    parser = build_parser()
    assert plan_from_args(parser.parse_args(["bench", "--quick"])).wrong_geometry is True
    plan = plan_from_args(parser.parse_args(["bench", "--quick", "--no-wrong-geometry"]))
    assert plan.wrong_geometry is False and plan.to_dict()["wrong_geometry"] is False


def test_a_case_gets_the_wrong_geometry_path_only_with_geometry_and_the_flag_on():
    from rso.evaluation.bench.arms import other_path_inputs

    geometry = clustered_geometry()
    scan = PhaseScan(geometry)  # as read_inputs reads an FDK phase's geometry file
    inputs = {"fixed": "F", "moving": "M", "fixed_geometry": scan, "moving_geometry": scan}
    plan = bench.BenchPlan()
    paths, perturbation = other_path_inputs(inputs, plan, position=4)
    assert set(paths) == {bench.NO_GEOMETRY_ISO_ARM, bench.WRONG_GEOMETRY_ISO_ARM}
    assert perturbation == "distances +1 %"
    wrong = paths[bench.WRONG_GEOMETRY_ISO_ARM]
    assert wrong["fixed_geometry"] is scan and wrong["moving"] == "M"  # the moving geometry only
    assert wrong["moving_geometry"] == PhaseScan(wrong_geometries(geometry)["distances +1 %"])
    assert paths[bench.NO_GEOMETRY_ISO_ARM]["moving_geometry"] is None
    tv = {**inputs, "fixed_geometry": PhaseScan(geometry, "tv"), "moving_geometry": PhaseScan(geometry, "tv")}
    # never matched: no wrong geometry; without the files a session of its own (ISO differs there)
    tv_paths, tv_perturbation = other_path_inputs(tv, plan, position=4)
    assert set(tv_paths) == {bench.NO_GEOMETRY_ISO_ARM} and tv_perturbation is None
    assert tv_paths[bench.NO_GEOMETRY_ISO_ARM]["fixed_geometry"] is None
    off, none = other_path_inputs(inputs, replace(plan, wrong_geometry=False), position=4)
    assert set(off) == {bench.NO_GEOMETRY_ISO_ARM} and none is None
    bare = {**inputs, "fixed_geometry": None, "moving_geometry": None}
    assert other_path_inputs(bare, plan, position=0) == ({}, None)


def test_the_command_line_offers_every_case_set_of_the_plan():
    from rso.cli import build_parser
    from rso.cli.bench import plan_from_args

    parser = build_parser()
    choices = next(
        a for a in parser._subparsers._group_actions[0].choices["bench"]._actions if a.dest == "case_set"
    )
    assert set(choices.choices) == set(case_sets.CASE_SETS)
    plan = plan_from_args(parser.parse_args(["bench", "--case-set", "conebeam-second"]))
    assert plan.cases == case_sets.CONEBEAM_SECOND_CASES
