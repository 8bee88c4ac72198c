"""fp32 speed on the CPU, each change measured side by side in one run (issue: fp32 on CPUs without bf16).

Seconds per ISO iteration (forward, backward, Adam) of the bundled model on the demo case at its
grid, in fp32, for: the plain build; channels_last_3d memory format; tcmalloc preloaded (Debian
libtcmalloc-minimal4, when installed); both; and bf16 for reference where the CPU has it. A CPU
without AVX-512 (and so without native bf16) is emulated by capping oneDNN and ATen at AVX2
(ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY): that is the path ``--precision auto`` takes there. Each
variant runs in a fresh process (tcmalloc must be preloaded before Python starts), in turn, so the
machine's load is shared alike. Prints a table and writes JSON.

    python scripts/fp32_speed.py --out bench/results/fp32_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
VARIANTS = {  # name -> (precision, channels_last, tcmalloc, AVX2 only)
    "fp32": ("fp32", False, False, False),
    "fp32 + channels_last_3d": ("fp32", True, False, False),
    "fp32 + tcmalloc": ("fp32", False, True, False),
    "fp32 + channels_last_3d + tcmalloc": ("fp32", True, True, False),
    "bf16 + tcmalloc": ("bf16", False, True, False),
    "fp32, AVX2 only": ("fp32", False, False, True),
    "fp32, AVX2 only + tcmalloc": ("fp32", False, True, True),
}
# What a CPU without AVX-512 offers the two libraries that do the network's arithmetic.
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def measure(precision: str, channels_last: bool, iterations: int) -> dict:
    """In this process: ISO iterations on the demo case; the median seconds per iteration after a warm-up."""
    import torch

    from rso.core.inputs import read_inputs
    from rso.core.model import native_bf16
    from rso.core.workflow import start_session
    from rso.evaluation.demo import EVALUATION_MASK, demo_case
    from rso.settings import EngineSettings, PairInputs

    case = demo_case()
    inputs = read_inputs(
        PairInputs(
            fixed=str(case / "cbct_phase0.nii.gz"),
            moving=str(case / "cbct_phase5.nii.gz"),
            truth=str(case / "truth_0_5.nii.gz"),
            metrics_mask=str(case / EVALUATION_MASK),
        )
    )
    if precision == "bf16" and not native_bf16(torch.device("cpu")):
        return {"skipped": "no native bf16 on this CPU"}
    session = start_session(EngineSettings(device="cpu", precision=precision), inputs)
    session.net.channels_last = channels_last
    seconds = []
    session.iso(iterations, progress=lambda p: seconds.append(p.elapsed))
    steps = [b - a for a, b in zip([0.0, *seconds], seconds)][1:]
    return {
        "seconds_per_iteration": sorted(steps)[len(steps) // 2],
        "threads": torch.get_num_threads(),
        "tre_mm": session.history[-1].metrics["tre_mm"],
        "grid": list(session.grid.shape),
        # Shows the AVX2 cap took: ATen's kernels and the bf16 check ("auto" picks fp32 there).
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(torch.device("cpu")),
    }


def run_variant(name: str, iterations: int) -> dict:
    precision, channels_last, tcmalloc, avx2_only = VARIANTS[name]
    env = {**os.environ, **(AVX2_ONLY if avx2_only else {})}
    if tcmalloc:
        if not TCMALLOC.is_file():
            return {
                "variant": name,
                "skipped": f"{TCMALLOC} is not installed (apt-get install libtcmalloc-minimal4)",
            }
        env["LD_PRELOAD"] = str(TCMALLOC)
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from fp32_speed import measure; "
        f"print(json.dumps(measure({precision!r}, {channels_last}, {iterations})))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return {"variant": name, **json.loads(done.stdout.strip().splitlines()[-1])}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fp32_speed.json"))
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows = [run_variant(name, args.iterations) for name in VARIANTS]
    base = rows[0].get("seconds_per_iteration")  # every ratio is against the plain fp32 build
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; ISO iterations on the demo case, median after warm-up")
    for row in rows:
        if "skipped" in row:
            print(f"{row['variant']:38s} skipped: {row['skipped']}")
            continue
        ratio = base / row["seconds_per_iteration"] if base else float("nan")
        print(
            f"{row['variant']:38s} {row['seconds_per_iteration']:.3f} s/it  {ratio:.2f}x  "
            f"TRE {row['tre_mm']['mean']:.2f} mm  "
            f"({row['aten_capability']}, native bf16: {row['native_bf16']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "started": started,
                "cpu": cpu_name(),
                "cores": os.cpu_count(),
                "iterations": args.iterations,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
