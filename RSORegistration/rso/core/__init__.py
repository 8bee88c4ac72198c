"""The registration core: geometry, images, the network, losses, ISO/RSO, metrics, the session and its
results.

Depends on nothing else in the engine but ``rso.errors`` and ``rso.options`` (docs/architecture.md §2).
"""
