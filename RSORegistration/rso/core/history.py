"""The history of a session: the accepted steps, the state after each, undo, and the folder on disk.

A state is only ever appended once its step was accepted, so a cancelled or failed step leaves the
history as it was. With a folder, each accepted state and the manifest naming it are written
(atomically, state first) before ``accept`` returns: a crash loses at most the step in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rso.core.steps import StepRecord
from rso.core.store import SessionState, SessionStore


class History:
    """Step records and states: ``states[k]`` is the state after step k (0: before any step).

    Only the two newest states stay in memory once a folder is attached; older ones reload from
    disk when undo reaches them. ``describe`` gives the manifest's parts that are not the steps.
    """

    def __init__(self, initial: SessionState, describe: Callable[[], dict]):
        self.records: list[StepRecord] = []
        self._states: list[SessionState | None] = [initial]
        self._describe = describe
        self.store: SessionStore | None = None

    @classmethod
    def reopened(cls, store: SessionStore, records: list[StepRecord], describe) -> History:
        """The history of a session folder at its last accepted step (states load on demand)."""
        history = cls.__new__(cls)
        history.records, history._describe, history.store = records, describe, store
        history._states = [None] * (len(records) + 1)
        store.remove_orphan_states(len(records))
        return history

    @property
    def folder(self) -> Path | None:
        return self.store.folder if self.store is not None else None

    @property
    def state(self) -> SessionState:
        return self.state_at(len(self.records))

    def state_at(self, index: int) -> SessionState:
        """The state after step ``index`` (0: before any step); older states reload from disk."""
        if self._states[index] is None:
            self._states[index] = self.store.load_state(index)
        return self._states[index]

    def accept(self, record: StepRecord, state: SessionState) -> None:
        index = len(self.records) + 1
        if self.store is not None:  # disk first: a crash now leaves the previous session intact
            self.store.save_state(index, state)
            self.write_manifest(self.records + [record])
        self.records.append(record)
        self._states.append(state)
        if self.store is not None and index >= 2:
            self._states[index - 2] = None  # older states reload from disk on undo

    def undo(self) -> StepRecord | None:
        """Drop the last step and its state; None if there is nothing to undo."""
        if not self.records:
            return None
        record = self.records.pop()
        self._states.pop()
        if self.store is not None:
            self.write_manifest()
            self.store.remove_state(len(self.records) + 1)
        return record

    def attach(self, folder: str | Path, inputs: dict) -> None:
        """Start writing the session (inputs, states, manifest) into a new folder."""
        self.store = SessionStore.create(folder)
        for index, state in enumerate(self._states):
            self.store.save_state(index, state)
        self.store.write_inputs(inputs)
        self.write_manifest()

    def write_manifest(self, records: list[StepRecord] | None = None) -> None:
        steps = self.records if records is None else records
        self.store.write_manifest({**self._describe(), "steps": [r.to_dict() for r in steps]})
