"""The peers run in a process of their own, spawned once per benchmark run and used for every peer call.

In the process that had run RTK's FDK and Joseph projection (artefact matching), elastix's B-spline
spent its time re-smoothing its image pyramid and took more than 25 minutes for a fit that takes
30-50 s in a fresh process on the same 2 cores (a cone-beam case of 144 x 113 x 133 voxels); ANTs
shares ITK's thread pool too. A spawned process has none of that state, so each peer is timed as a
user running it would see it, and its peak memory is that process's own (``Measured`` runs there).
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import SimpleITK as sitk

from rso.core.boxes import Box


@dataclass(frozen=True)
class PeerCost:
    """A peer call's wall seconds and peak memory, measured in the peer process."""

    seconds: float
    memory: dict


def _log_like(level: int) -> None:
    """In the peer process: log as the benchmark does (a spawned process starts with no handlers)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _measured_call(peer: str, fixed: sitk.Image, moving: sitk.Image, settings, box: Box | None):
    """In the peer process: the peer's classes loaded outside the timing, then one measured fit."""
    import rso.evaluation.peers as peers
    from rso.evaluation.bench.measure import Measured

    peers.warm_up(peer)
    with Measured() as cost:
        if peer == "elastix":
            result = peers.elastix_bspline(fixed, moving, settings, box=box)
        else:
            result = peers.ants_syn(fixed, moving, settings)
    return result, PeerCost(cost.seconds, cost.memory)


class PeerProcess:
    """One spawned worker process for the peers; a context manager that stops it on leaving."""

    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run(self, peer: str, fixed: sitk.Image, moving: sitk.Image, settings, box: Box | None = None):
        """``peer`` ("elastix" or "ants") on the pair, in the peer process: (PeerResult, PeerCost)."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            level = logging.getLogger().getEffectiveLevel()
            self._pool = ProcessPoolExecutor(1, context, initializer=_log_like, initargs=(level,))
        return self._pool.submit(_measured_call, peer, fixed, moving, settings, box).result()
