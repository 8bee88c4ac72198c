"""What a number costs: wall seconds and peak memory of a block, and the machine it ran on."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from rso import __version__

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def machine_info() -> dict:
    """CPU model, cores, memory and GPU: what a reader needs to compare timings."""
    import torch  # here, not at the top: the command line's help imports this module's neighbours

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _memory_gb() -> float | None:
    try:
        total_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        return None
    return round(total_kb / 2**20, 1)


def library_versions() -> dict:
    """Versions of everything that shapes a number (peers too, when installed)."""
    packages = (
        "torch",
        "monai",
        "SimpleITK",
        "numpy",
        "scipy",
        "scikit-image",
        "matplotlib",
        "itk-elastix",
        "itk",
        "antspyx",
    )
    versions = {"rso-registration": __version__}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux (>= 4.0) lets a process reset its own peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


class Measured:
    """Wall seconds and peak memory of a block.

    Peak resident memory is the process's VmHWM, reset on entry, so each block gets its own peak
    (torch's and ITK's C++ allocations included, which tracemalloc would miss). Where that reset
    is not possible a thread samples the RSS every 10 ms. On CUDA, torch's peak allocation too.
    """

    def __init__(self, device: torch.device | None = None):
        self.cuda = device is not None and device.type == "cuda"
        self.seconds = 0.0
        self.memory: dict = {}

    def __enter__(self) -> Measured:
        self.rss_before_kb = _status_kb("VmRSS")
        self.hwm = _reset_peak_rss()
        self._samples: list[int] = []
        self._stop = threading.Event()
        if not self.hwm:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            if (rss := _status_kb("VmRSS")) is not None:
                self._samples.append(rss)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self._stop.set()
        if self.hwm:
            peak, method = _status_kb("VmHWM"), "VmHWM (reset per block)"
        else:
            self._sampler.join()
            peak, method = (
                max(self._samples, default=_status_kb("VmRSS") or 0) or None,
                "RSS sampled every 10 ms",
            )
        mb = lambda kb: round(kb / 1024, 1) if kb is not None else None  # noqa: E731
        self.memory = {"peak_rss_mb": mb(peak), "rss_before_mb": mb(self.rss_before_kb), "method": method}
        if self.cuda:
            import torch

            self.memory["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def merged_memory(*blocks: Measured) -> dict:
    """The largest peak over several blocks (a pipeline's steps)."""
    peaks = [b.memory for b in blocks if b.memory.get("peak_rss_mb") is not None]
    if not peaks:
        return {}
    merged = dict(max(peaks, key=lambda m: m["peak_rss_mb"]))
    merged["rss_before_mb"] = blocks[0].memory.get("rss_before_mb")
    cuda = [b.memory["cuda_peak_allocated_mb"] for b in blocks if "cuda_peak_allocated_mb" in b.memory]
    if cuda:
        merged["cuda_peak_allocated_mb"] = max(cuda)
    return merged


# Per stage of one process (rso.evaluation.bench.scale runs each spacing and precision in its own)
class StageMeter:
    """Seconds, peak RSS after the stage (ru_maxrss: the process's peak so far) and the bytes that
    appeared under ``folder`` during the stage, per stage."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.stages: dict[str, dict] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        before, start = tree_bytes(self.folder), time.perf_counter()
        yield
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()  # CUDA work is asynchronous: the stage ends when the device is done
        seconds = time.perf_counter() - start
        self.stages[name] = {
            "seconds": seconds,
            "peak_rss_bytes": peak_rss_bytes(),
            "bytes_written": tree_bytes(self.folder) - before,
        }
        log.info(
            "scale: %s %.2f s, peak RSS %.2f GB", name, seconds, self.stages[name]["peak_rss_bytes"] / 1e9
        )


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (its path relative to the folder) and its bytes."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def tree_bytes(folder: Path) -> int:
    return sum(file_sizes(folder).values())
