"""What the Slicer module's panel shows, decided from the session's state; the Qt widget only applies it.

Imports nothing heavy: the widget calls it before the engine's packages are installed.
"""

from __future__ import annotations

from collections.abc import Callable


def enabled_widgets(params, core=None) -> dict[str, bool]:
    """Widget name in RSORegistration.ui -> whether it is enabled.

    ``params``: the parameter node (the widget's wrapper or a RunParameters, same names); ``core``:
    the RegistrationLogic, None before it is made. Everything but Cancel is disabled while a step runs.
    """
    busy = bool(core and core.busy)
    session = bool(core and core.can_step)
    idle = not busy
    stepping = idle and session
    accepted = idle and bool(core and core.history)
    return {
        "registerButton": idle and bool(params.fixedVolume and params.movingVolume),
        "isoButton": stepping,
        "propagateLabelsButton": stepping,
        "drawRegionButton": stepping,
        "overlayComboBox": stepping,
        "refineRegionButton": stepping and params.region is not None,
        "undoButton": accepted,
        "exportButton": accepted,
        "reopenButton": idle and bool(params.sessionFolder) and not session,
        "clearCacheButton": idle,
        "cancelButton": busy,
        "inputsCollapsibleButton": idle,
        "settingsCollapsibleButton": idle,
    }


def metrics_text(history: list[dict], tr: Callable[[str], str] = lambda text: text) -> str:
    """The latest step's numbers in one line: RMSE (and in the box), TRE when a truth is loaded.

    ``tr``: the module's translation function (Slicer's ``slicer.i18n.tr``).
    """
    if not history:
        return ""
    metrics = history[-1].get("metrics") or {}
    parts = (
        [tr("RMSE {value:.1f} HU").format(value=metrics["rmse_hu"])]
        if metrics.get("rmse_hu") is not None
        else []
    )
    if metrics.get("rmse_hu_box") is not None:
        parts.append(tr("in region {value:.1f} HU").format(value=metrics["rmse_hu_box"]))
    if (metrics.get("tre_mm") or {}).get("mean") is not None:
        parts.append(tr("TRE {value:.2f} mm").format(value=metrics["tre_mm"]["mean"]))
    return ", ".join(parts)


def progress_percent(message: dict) -> float:
    """How far a progress message's step is, in percent (0-100) of its iterations."""
    iterations = max(1, int(message.get("iterations") or 1))
    return 100 * int(message.get("iteration") or 0) / iterations
