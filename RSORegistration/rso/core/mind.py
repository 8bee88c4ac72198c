"""MIND-SSC: a local self-similarity descriptor that compares structure, not raw intensities.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarities" (MICCAI 2013). Each voxel gets 12 channels, one per pair of its six face
neighbours that are not opposite: exp(-SSD of the two neighbours' patches / local variance).
Streaks and a changed grey level move every channel alike, so the descriptor follows edges and
vessels rather than CBCT artefacts; ConvexAdam and VoxelMorph++ use it for lung CT with radius 1
and dilation 2, and so does native-resolution RSO (``rso.core.native``).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

# The six face neighbours of a voxel, as (dz, dy, dx) offsets.
_NEIGHBOURS = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))
# The 12 pairs of neighbours sqrt(2) apart (all pairs but the three opposite ones).
PAIRS = tuple(
    (a, b) for a, b in itertools.combinations(_NEIGHBOURS, 2) if sum(x != y for x, y in zip(a, b)) == 2
)
CHANNELS = len(PAIRS)


def _shifted(padded: torch.Tensor, offset: tuple[int, int, int], dilation: int, shape) -> torch.Tensor:
    """The image moved by ``offset * dilation`` voxels, cut from a copy padded by ``dilation``."""
    starts = [dilation + o * dilation for o in offset]
    return padded[(..., *(slice(s, s + n) for s, n in zip(starts, shape)))]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptors of a volume.

    Args:
        image: (B, 1, D, H, W) intensities (any scale: the descriptor is normalised per voxel).
        radius: half-width of the cubic patch whose SSD is compared, in voxels.
        dilation: distance of the compared neighbours, in voxels.

    Returns:
        (B, 12, D, H, W) descriptors in (0, 1], the same size as ``image``.
    """
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc expects (B, 1, D, H, W), got {tuple(image.shape)}")
    shape = image.shape[2:]
    padded = F.pad(image, [dilation] * 6, mode="replicate")
    squared = torch.cat(
        [
            (_shifted(padded, a, dilation, shape) - _shifted(padded, b, dilation, shape)) ** 2
            for a, b in PAIRS
        ],
        dim=1,
    )
    size = 2 * radius + 1
    ssd = F.avg_pool3d(F.pad(squared, [radius] * 6, mode="replicate"), size, stride=1)
    ssd = ssd - ssd.min(dim=1, keepdim=True).values
    variance = ssd.mean(dim=1, keepdim=True)
    # Bounded around its mean so that flat regions (variance ~ 0) do not turn noise into structure.
    mean = variance.mean().detach()
    variance = torch.minimum(torch.maximum(variance, mean * 1e-3 + 1e-12), mean * 1e3 + 1e-12)
    return torch.exp(-ssd / variance)
