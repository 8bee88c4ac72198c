"""The synthetic demo pair (rso.phantom) as volume nodes, for the self-test, tutorial and screenshot."""

from __future__ import annotations

from rso.phantom import DemoPair, demo_pair


def add_demo_volumes(scene, pair: DemoPair | None = None):
    """Fixed and moving volume nodes of the demo pair (and the pair itself)."""
    from .volumes import volume_from_image

    pair = pair or demo_pair()
    fixed = volume_from_image(scene, pair.fixed, "demo fixed")
    moving = volume_from_image(scene, pair.moving, "demo moving")
    return fixed, moving, pair
