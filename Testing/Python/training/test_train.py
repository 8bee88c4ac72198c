"""Training the general model: the paper's schedule, resume, DDP on 2 CPU processes, and training
against the simulator's true fields."""

import csv
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TEST_GRID, write

from rso.cli import EXIT_BAD_INPUT, main
from rso.core.body import framed_grid
from rso.core.model import ModelConfig, RegistrationNet, load_checkpoint, save_checkpoint
from rso.errors import InputError
from rso.simulation.phantom import breathing_like_field, pair_from_field
from rso.training.train import LR_DROPS, PairSampler, TrainConfig, learning_rate_at, load_cases, train
from rso.training.truth import TruthLoss, TruthPairSampler, load_truth_cases, truth_loss

TINY = "4,8,16,32,64"


@pytest.fixture(scope="module")
def case_folders(chest_ct, tmp_path_factory):
    """Two small cases of three breathing phases each, from the real chest CT."""
    folders = []
    for case, amplitude in enumerate((8.0, 14.0)):
        folder = tmp_path_factory.mktemp(f"case{case}")
        for phase, scale in enumerate((0.0, 0.5, 1.0)):
            pair = pair_from_field(
                chest_ct, breathing_like_field(chest_ct, amplitude * scale, 0.0, (0, 0, 0))
            )
            write(pair.fixed, folder / f"cbct_phase{phase}.nii.gz")
        folders.append(str(folder))
    return folders


def test_learning_rate_follows_the_paper_schedule():
    config = TrainConfig(data=[], out="x", iterations=100_000, grid=TEST_GRID)
    assert learning_rate_at(0, config) == pytest.approx(3e-4)
    assert learning_rate_at(49_999, config) == pytest.approx(3e-4)
    assert learning_rate_at(50_000, config) == pytest.approx(3e-5)
    assert learning_rate_at(75_000, config) == pytest.approx(3e-6)
    assert LR_DROPS == (0.5, 0.75)


def test_pairs_are_two_different_phases_augmented_alike(case_folders):
    cases = load_cases(case_folders, TEST_GRID, "cbct_phase*.nii.gz")
    assert cases[0].shape == (3, *TEST_GRID)
    fixed, moving = PairSampler(cases, seed=0).sample()
    assert fixed.shape == moving.shape == (1, 1, *TEST_GRID)
    assert not torch.equal(fixed, moving)


def test_fine_tuning_starts_from_the_given_weights_with_a_fresh_schedule(case_folders, tmp_path, caplog):
    channels = tuple(int(c) for c in TINY.split(","))
    start = RegistrationNet(ModelConfig(channels=channels, grid=TEST_GRID))
    save_checkpoint(start, tmp_path / "start.pt", step=500)
    config = TrainConfig(
        data=case_folders,
        out=str(tmp_path / "tuned.pt"),
        iterations=2,
        grid=TEST_GRID,
        channels=channels,
        learning_rate=1e-9,  # so small that the weights must stay where they started
        device="cpu",
        init=str(tmp_path / "start.pt"),
        progress=False,
    )
    with caplog.at_level(logging.INFO, logger="rso.training.train"):
        train(config)
    assert "step 2 of 2: loss" in caplog.text  # no bar: a log line per checkpoint, with the time left
    tuned, payload = load_checkpoint(tmp_path / "tuned.pt")
    assert payload["step"] == 2 and payload["training"]["init"] == str(tmp_path / "start.pt")
    for name, weights in start.state_dict().items():
        assert torch.allclose(tuned.state_dict()[name], weights, atol=1e-5), name
    wider = TrainConfig(
        **{**config.__dict__, "out": str(tmp_path / "other.pt"), "channels": (8, 16, 32, 64, 128)}
    )
    with pytest.raises(InputError, match="has grid .* and channels"):
        train(wider)
    assert not (tmp_path / "other.pt").exists()


@pytest.fixture(scope="module")
def truth_case(chest_ct, tmp_path_factory):
    """A simulated-like case: phase 0 pulled from the real chest CT (phase 1) through a known field."""
    folder = tmp_path_factory.mktemp("truth_case")
    pair = pair_from_field(chest_ct, breathing_like_field(chest_ct, 12.0, 6.0, (0.3, 0.0, 0.4)))
    write(pair.fixed, folder / "cbct_phase0.nii.gz")
    write(pair.moving, folder / "cbct_phase1.nii.gz")
    write(pair.truth, folder / "truth_0_1.nii.gz")
    write(sitk.Cast(chest_ct > -500, sitk.sitkUInt8), folder / "body_mask.nii.gz")
    return folder, pair


def test_truth_pairs_carry_the_true_field_in_model_voxels(truth_case):
    folder, pair = truth_case
    (case,) = load_truth_cases([str(folder)], TEST_GRID)
    fixed, moving, truth, body = TruthPairSampler([case], seed=0).sample()
    assert fixed.shape == moving.shape == body.shape == (1, 1, *TEST_GRID)
    assert truth.shape == (1, 3, *TEST_GRID)
    assert 0 < float(body.mean()) < 1 and set(torch.unique(body).tolist()) == {0.0, 1.0}
    # Back in LPS mm on the model grid, the vectors are the field's own there.
    grid = framed_grid(pair.fixed, TEST_GRID, hu=True)  # the session's grid for this fixed image
    expected = grid.resample_field(pair.truth)
    assert np.allclose(grid.voxels_to_mm(truth[0].numpy()), expected, atol=1e-3)
    assert float(np.abs(expected[..., 2]).max()) > 5.0  # the SI motion is there to be learnt


def test_training_against_the_truth_lowers_the_error_to_it(truth_case, tmp_path):
    folder, _ = truth_case
    channels = tuple(int(c) for c in TINY.split(","))
    (case,) = load_truth_cases([str(folder)], TEST_GRID)

    def error(model_path) -> float:
        net, _ = load_checkpoint(model_path)
        with torch.no_grad():
            return float(truth_loss(net(case.fixed, case.moving[0]), case.truth[0], case.body))

    save_checkpoint(RegistrationNet(ModelConfig(channels=channels, grid=TEST_GRID)), tmp_path / "start.pt")
    config = TrainConfig(
        data=[str(folder)],
        out=str(tmp_path / "tuned.pt"),
        iterations=30,
        grid=TEST_GRID,
        channels=channels,
        learning_rate=3e-3,
        device="cpu",
        init=str(tmp_path / "start.pt"),
        progress=False,
        supervision="truth",
        truth_smoothness=0.01,
    )
    train(config)
    training = load_checkpoint(tmp_path / "tuned.pt")[1]["training"]
    assert training["supervision"] == "truth" and training["truth_smoothness"] == 0.01
    assert error(tmp_path / "tuned.pt") < 0.5 * error(tmp_path / "start.pt")


def test_the_truth_loss_smoothness_constrains_the_field_where_the_truth_does_not_reach():
    body = torch.zeros(1, 1, 8, 8, 8)
    body[..., 2:6, 2:6, 2:6] = 1.0
    z = torch.linspace(0, 1, 8).view(1, 1, 8, 1, 1).expand(1, 3, 8, 8, 8)
    truth = 2.0 * z  # smooth motion, in voxels
    rough = truth + 3.0 * (1 - body) * (torch.arange(8) % 2).view(1, 1, 1, 1, 8)  # noise in the air only
    assert float(truth_loss(rough, truth, body)) == float(truth_loss(truth, truth, body)) == 0.0
    assert float(TruthLoss(0.0)(rough, truth, body)) == 0.0
    assert float(TruthLoss(1.0)(rough, truth, body)) > 10 * float(TruthLoss(1.0)(truth, truth, body)) > 0


def test_truth_supervision_refuses_cases_without_truth_and_a_negative_smoothness(
    case_folders, truth_case, tmp_path, capsys
):
    common = ["train", "--out", str(tmp_path / "m.pt"), "--iterations", "1", "--channels", TINY]
    common += ["--grid", ",".join(map(str, TEST_GRID)), "--supervision", "truth", "--device", "cpu"]
    for extra in (["--data", case_folders[0]], ["--data", str(truth_case[0]), "--smoothness", "-0.1"]):
        with pytest.raises(SystemExit) as refused:
            main([*common, *extra])
        assert refused.value.code == EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "needs cases made by `simulate`" in errors[0] and "--smoothness must be >= 0" in errors[1]
    assert len(errors) == 2 and not (tmp_path / "m.pt").exists()


def run_torchrun(args, processes):
    env = {**os.environ, "RSO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--standalone",
        "-m",
        "rso.cli.train",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_on_two_cpu_processes_keeps_ranks_identical_and_resumes(case_folders, tmp_path):
    out = tmp_path / "model.pt"
    args = [
        "--data",
        *case_folders,
        "--out",
        str(out),
        "--grid",
        ",".join(map(str, TEST_GRID)),
        "--channels",
        TINY,
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
    ]
    run_torchrun([*args, "--iterations", "4"], processes=2)
    net, payload = load_checkpoint(out)
    assert payload["step"] == 4 and payload["training"]["world_size"] == 2
    checksums = payload["training"]["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    initial = net.state_dict()
    run_torchrun(
        [*args, "--iterations", "6", "--resume", "--compact", str(tmp_path / "compact.pt")], processes=2
    )
    resumed, payload = load_checkpoint(out)
    assert payload["step"] == 6
    assert any(not torch.equal(initial[k], v) for k, v in resumed.state_dict().items())
    rows = list(csv.DictReader((tmp_path / "model.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    compact, compact_payload = load_checkpoint(tmp_path / "compact.pt")
    assert "optimizer" not in compact_payload
    assert next(iter(compact_payload["state_dict"].values())).dtype == torch.float16
