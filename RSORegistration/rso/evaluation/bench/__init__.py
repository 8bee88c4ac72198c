"""`bench`: the paper's experiment against ground truth, the classical peers, and speed/memory scaling.

The package imports nothing heavy, so that the command line's help stays quick:
``runner.run_bench`` runs it. One command regenerates every JSON, table and figure (see bench/README.md):

* **The paper's experiment** on simulated CBCT cases (fixed = CBCT phase 0, moving = CBCT phase
  K) with boxes per case. Per (case, box) the arms are: the general model; ISO-long; ISO-short;
  ISO-short + RSO in each mode; ISO-short and native RSO without projection geometry and with the moving
  image's geometry slightly wrong (where the case has geometry); and the peers (elastix B-spline, elastix
  restricted to the box by a fixed-image mask, ANTs SyN) (``arms``).
* Every arm is scored by the same function, ``RegistrationSession.metrics``, on the same model
  grid: box TRE against the simulator's truth, box RMSE against the *clean* fixed CT, whole-image
  TRE, the largest change outside box + margin, folding; plus wall seconds and peak memory.
* **Speed** (``speed``): seconds per iteration and per step for each RSO mode at two grids and two
  box sizes, side by side in one run, and the interactive latency from a box handed to the
  session until the re-warped full-resolution image and difference image exist.

Results go to ``--out`` (default out/bench): one JSON per (case, box, arm) and per speed
measurement, ``summary.json``, ``summary.md`` and ``figures/``. Every JSON records the machine and
library versions.
"""
