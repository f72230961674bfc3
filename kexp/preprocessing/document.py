"""A run's fitted preprocessing as data: the document preprocessing/preprocessing.json holds.

The run store (kexp.run.records) writes and reads the file; this module only turns a Fitted into
that document and back, through the kind registry, so `kexp evaluate` and `kexp predict`
transform without refitting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kexp.errors import RunDirError
from kexp.preprocessing.kinds import KINDS, Fitted

# Bumped when the saved layout changes; a run saved by a newer kexp is refused, not misread.
FORMAT_VERSION = 1


def to_document(fitted: Fitted, task: str, class_names: list[str], positive_class: str | None, raw_input: str | None) -> dict[str, Any]:
    """Everything a later command needs to turn raw inputs into model inputs and outputs into labels."""
    return {
        "format": FORMAT_VERSION,
        "kind": fitted.kind,
        "task": task,
        # class ids in order: output unit i (softmax), or the sigmoid's 0 and 1, is class_names[i]
        "class_names": class_names,
        "positive_class": positive_class,
        # why new raw inputs cannot be encoded (a corpus read as ids, not text); None: they can
        "raw_input_unsupported": raw_input,
        "state": fitted.state(),
    }


def from_document(document: dict[str, Any], source: str) -> Fitted:
    """The fitted preprocessor a run saved; `source` names the file in errors."""
    version = document.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(f"{source}: preprocessing format {version!r} is newer than this kexp reads ({FORMAT_VERSION}); upgrade kexp")
    kind, state = document.get("kind"), document.get("state") or {}
    if kind not in KINDS.names():
        raise RunDirError(f"{source}: unknown preprocessing kind {kind!r}")
    try:
        return KINDS.get(kind).from_state(state)
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"{source}: damaged {kind} preprocessing ({exc})") from None


@dataclass(frozen=True)
class SavedPreprocessing:
    """A run's preprocessing.json read back: the fitted preprocessing, and what the model's outputs mean."""

    fitted: Fitted
    task: str  # classification or regression
    class_names: list[str]  # output unit i (softmax), or the sigmoid's 0 and 1, is class_names[i]; none for regression
    positive_class: str | None


def load_saved(document: dict[str, Any], source: str) -> SavedPreprocessing:
    """The preprocessing document as a typed record (from_document's errors for a damaged one)."""
    fitted = from_document(document, source)
    return SavedPreprocessing(fitted, document.get("task") or "classification", list(document.get("class_names") or []), document.get("positive_class"))
