"""From the scanner to the phases (issue 20): vendor projections and geometry through RTK's readers, the
breathing signal, phase sorting and one FDK image per phase (``rso-registration phases``,
docs/scanner-import.md).

Modules: ``readers`` (projections), ``scanners`` (geometry), ``signal`` (breathing signal and phase),
``sorting`` (phase bins and what each phase got), ``pipeline`` (the whole path, written atomically).
"""
