"""The general model: MONAI's UNet predicting a displacement field, followed by MONAI's Warp.

The architecture is the paper's Table 1. Checkpoints carry their own configuration so that a
file of another architecture is refused with a clear message instead of a shape error.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from monai.networks.blocks import Warp
from monai.networks.nets import UNet

from rso.core.imageio import write_bytes_atomically
from rso.errors import InputError
from rso.options import DEVICES, PRECISIONS

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rso-registration-checkpoint"
CHECKPOINT_VERSION = 1
PAPER_CHANNELS = (16, 32, 64, 128, 256)
DEFAULT_GRID = (64, 128, 128)
CHANNELS_LAST_ON_CPU = False  # decided by scripts/fp32_speed.py (README, Speed)


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. The defaults are the paper's Table 1; smaller channels make fast tests."""

    channels: tuple[int, ...] = PAPER_CHANNELS
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    grid: tuple[int, int, int] = DEFAULT_GRID  # (z, y, x) the model was trained at

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    def to_dict(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }


class RegistrationNet(torch.nn.Module):
    """phi_w: (fixed, moving) -> displacement in voxels (dz, dy, dx); ``warp`` applies it."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        if len(config.strides) != len(config.channels) - 1:
            raise InputError(
                f"model config needs one stride fewer than channels: {config.channels}, {config.strides}"
            )
        self.config = config
        self.unet = UNet(
            spatial_dims=3,
            in_channels=2,
            out_channels=3,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
        )
        # Images are normalised so that 0 is air; outside the moving image is air.
        self.warper = Warp(mode="bilinear", padding_mode="zeros")
        _start_at_identity(self.unet)

    # bfloat16 autocast for the UNet only (the warp and the losses stay float32): 2-3x faster on
    # CPUs with native bf16, with the field within about 2 % relative RMS. Set by ``set_precision``.
    bf16 = False
    # The UNet's input in channels-last order, so that oneDNN's convolutions skip their reorders
    # on the CPU (scripts/fp32_speed.py measures it); the weights follow on first use.
    channels_last = CHANNELS_LAST_ON_CPU

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """(B, 1, Z, Y, X) fixed and moving (normalised) -> (B, 3, Z, Y, X) displacement in voxels
        (dz, dy, dx)."""
        if fixed.shape != moving.shape or fixed.dim() != 5 or fixed.shape[1] != 1:
            raise ValueError(
                f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must both be (B, 1, Z, Y, X)"
            )
        pair = torch.cat([fixed, moving], dim=1)
        if self.channels_last and pair.device.type == "cpu":
            pair = pair.contiguous(memory_format=torch.channels_last_3d)
            self.unet.to(memory_format=torch.channels_last_3d)
        with torch.autocast(fixed.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.unet(pair).float().contiguous()

    def set_precision(self, precision: str, device: torch.device) -> str:
        """'fp32', 'bf16' or 'auto' (bf16 where the hardware does it natively); returns the choice."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if precision == "auto":
            precision = "bf16" if native_bf16(device) else "fp32"
        self.bf16 = precision == "bf16"
        return precision

    def warp(self, moving: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        return self.warper(moving, displacement)


def normalise(hu, window: tuple[float, float] | None = None):
    """The network's input intensities, same shape as ``hu``: the paper's (HU + 1000) / 2000 (Table 2).

    ``window``: an image that is not CT in HU gets its own (low, high) intensities instead, which go
    where the formula puts -1000 and 1000 HU (0 and 1): its percentiles (rso.core.pair.Normalisation),
    where the formula would squeeze a 0-255 image into an eighth of the range.
    """
    if window is None:
        return (hu + 1000.0) / 2000.0
    low, high = window
    return (hu - low) / (high - low)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when torch sees a GPU, else the CPU), 'cpu' or 'cuda'."""
    if name not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, not {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but torch sees no CUDA GPU")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _start_at_identity(unet: UNet) -> None:
    """Make the untrained network output (almost) zero displacement.

    MONAI's top up-block is ConvTranspose -> norm -> PReLU -> ResidualUnit whose skip is an
    identity, so out = a + conv(a). Zeroing the last conv would leave ``a``, which instance
    norm keeps at unit scale. Setting that conv to minus the identity (plus tiny noise, as
    VoxelMorph initialises its flow layer) cancels the skip while every weight stays trainable.
    """
    last_conv = [m for m in unet.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        weight = torch.randn_like(last_conv.weight) * 1e-5
        centre = tuple(k // 2 for k in last_conv.kernel_size)
        for channel in range(last_conv.out_channels):
            weight[(channel, channel, *centre)] -= 1.0
        last_conv.weight.copy_(weight)
        last_conv.bias.zero_()


def parameter_count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def save_checkpoint(
    net: RegistrationNet, path: str | os.PathLike, dtype: torch.dtype | None = None, **extra
) -> Path:
    """Write weights with their configuration (and any training state in ``extra``) atomically.

    ``dtype=torch.float16`` halves a shipped model; loading always gives float32 weights.
    """
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_config": net.config.to_dict(),
            "state_dict": {k: _stored(v, dtype) for k, v in net.state_dict().items()},
            **extra,
        },
        buffer,
    )
    return write_bytes_atomically(buffer.getvalue(), path)


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def load_checkpoint(path: str | os.PathLike) -> tuple[RegistrationNet, dict]:
    """Build the network a checkpoint describes and load its weights; refuse anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise InputError(
            f"model checkpoint {path.name} is corrupt or not a torch file ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path.name} is not an RSORegistration checkpoint (no model configuration in it)")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        net = RegistrationNet(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"checkpoint {path.name} has an unusable model configuration: {exc}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    _load_matching(net, state, path.name)
    return net, payload


def _load_matching(net: RegistrationNet, state: dict, name: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
            if keys
        )
        raise InputError(
            f"checkpoint {name} does not match its declared architecture {net.config.channels} ({detail})"
        )
    net.load_state_dict(state)


def bundled_model_path() -> Path | None:
    """The general model shipped with the package, if this build has one."""
    candidate = resources.files("rso") / "resources" / "general_model.pt"
    return Path(str(candidate)) if candidate.is_file() else None


def build_model(
    checkpoint: str | os.PathLike | None, config: ModelConfig | None = None
) -> tuple[RegistrationNet, str]:
    """The network to start from and a one-line description of where it came from.

    An explicit checkpoint wins; then an explicit config (an untrained network of that shape);
    then the bundled general model; then an untrained paper network, with a warning.
    """
    if checkpoint is not None:
        net, _ = load_checkpoint(checkpoint)
        return net, f"checkpoint {Path(checkpoint).name}"
    if config is None and (bundled := bundled_model_path()) is not None:
        net, _ = load_checkpoint(bundled)
        return net, "bundled general model"
    log.warning(
        "no trained general model given or bundled: using an untrained network "
        "(the general step gives ~identity)"
    )
    return RegistrationNet(config or ModelConfig()), "untrained network"
