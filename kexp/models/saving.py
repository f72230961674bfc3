"""Reopening a saved model (a run's `model.keras`) for the commands that read runs.

Always in Keras safe mode: a `.keras` file can carry Python bytecode (a Lambda layer's
function), and a run directory may come from someone else; safe mode refuses to run it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from kexp.errors import RunDirError


def load_model(path: Path | str):
    """The Keras model saved at `path`, loaded in safe mode; RunDirError says why Keras refused."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no saved model here")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip archive; say so before Keras' own "File not found"
        raise RunDirError(f"{path}: damaged or not a Keras model (not a .keras zip archive); train the run again")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as exc:
        # Keras explains a refusal in several sentences, the last suggesting safe_mode=False,
        # which kexp never uses: keep the first, which says what the file holds.
        reason = " ".join(str(exc).split()).split(". ")[0].rstrip(".")
        raise RunDirError(f"{path}: cannot load the model (kexp loads only in Keras safe mode): {reason}") from None
