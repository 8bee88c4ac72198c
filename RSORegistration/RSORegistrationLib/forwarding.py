"""An attribute of a façade that lives on one of its parts.

The logic and the review page's controller are façades over classes of one job each; their callers
(the Slicer module, the review page, the console, the tests) still read and set ``logic.history`` or
``logic.on_error``. ``Forwarded("part")`` declares such an attribute once, on the façade's class.
"""

from __future__ import annotations


class Forwarded:
    """``owner.name`` reads and writes ``owner.<part>.<attribute>`` (``attribute`` defaults to ``name``)."""

    def __init__(self, part: str, attribute: str | None = None):
        self.part, self.attribute = part, attribute

    def __set_name__(self, owner, name: str) -> None:
        self.attribute = self.attribute or name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return getattr(getattr(instance, self.part), self.attribute)

    def __set__(self, instance, value) -> None:
        setattr(getattr(instance, self.part), self.attribute, value)
