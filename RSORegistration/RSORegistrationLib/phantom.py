"""The synthetic phantom pair (rso.simulation.phantom) as volume nodes: self-test, tutorial, screenshot."""

from __future__ import annotations

from rso.simulation.phantom import PhantomPair, phantom_pair


def add_phantom_volumes(scene, pair: PhantomPair | None = None):
    """Fixed and moving volume nodes of the demo pair (and the pair itself)."""
    from .volumes import volume_from_image

    pair = pair or phantom_pair()
    fixed = volume_from_image(scene, pair.fixed, "phantom fixed")
    moving = volume_from_image(scene, pair.moving, "phantom moving")
    return fixed, moving, pair
