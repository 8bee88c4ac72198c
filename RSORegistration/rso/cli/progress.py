"""Progress for terminals: a tqdm bar per optimisation step, or log lines when quiet or piped."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rso.core.optimize import Progress

log = logging.getLogger("rso")


class step_progress:
    """A tqdm bar per optimisation step on a terminal (log lines when quiet or piped), fed by callbacks."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.step = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()

    def __call__(self, update: Progress) -> None:
        if update.step != self.step or update.iteration == 1:
            self._close()
            self.step = update.step
            if self.enabled:
                from tqdm import tqdm

                self.bar = tqdm(total=update.iterations, desc=update.step.upper(), unit="it", leave=True)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{update.loss:.5f}")
        elif update.iteration % max(1, update.iterations // 10) == 0:
            log.info(
                "%s %d/%d loss %.5f, %.0f s left",
                update.step.upper(),
                update.iteration,
                update.iterations,
                update.loss,
                update.eta,
            )

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
