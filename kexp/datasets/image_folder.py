"""`image_folder`: a folder of image files, one subfolder per class (Keras' image_dataset_from_directory layout).

    <path>/<class>/*.png               held out: a seeded stratified test_fraction
    <path>/train/<class>/*.png  and  <path>/test/<class>/*.png      the folder's own split

Only the files' paths are read here (sorted, so every run lists them in one order) and each is
checked cheaply (its name and first and last bytes), so a non-image or truncated file is named
before training starts. The pixels are decoded batch by batch in the input pipeline
(kexp.preprocessing.image_files), never all held in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from kexp.datasets.base import RawData
from kexp.errors import DataError
from kexp.preprocessing.image_files import IMAGE_SUFFIXES, AugmentOptions, FittedImageFiles, image_file_problem
from kexp.registry import Options, dataset

SPLIT_FOLDERS = ("train", "test")
SHOWN_SKIPS = 5  # skipped files named in the summary; the count covers them all


class ImageFolderOptions(Options):
    path: str = Field(description="folder of class subfolders (or of train/ and test/ ones), relative to the data directory or absolute")
    image_size: list[PositiveInt] = Field(default=[256, 256], min_length=2, max_length=2,
                                          description="height and width every image is resized to (bilinear), Keras' default")
    color_mode: Literal["grayscale", "rgb"] = Field(default="rgb", description="1 or 3 channels, whatever the files hold")
    scale: bool = Field(default=True, description="pixels as float32 in [0, 1] instead of 0-255")
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="held out for testing (stratified, seeded) unless the folder has train/ and test/")
    on_bad_file: Literal["error", "skip"] = Field(default="error", description="a non-image or truncated file: stop naming it, or leave it out and count it")
    augment: AugmentOptions = Field(default_factory=AugmentOptions, description="random flips, rotations, zooms, contrast on training batches only")

    def streams_from_files(self) -> bool:
        return True


@dataclass
class Listing:
    """The image files of a folder tree, their class ids, and the files left out with why."""

    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataset("image_folder", ImageFolderOptions)
def load_image_folder(options: ImageFolderOptions, data_dir: Path, seed: int) -> RawData:
    """Your own images: one subfolder per class (or train/ and test/ of them), PNG/JPEG/BMP/GIF, decoded as they stream."""
    root = Path(options.path) if Path(options.path).is_absolute() else data_dir / options.path
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; image_folder's path is a folder of class subfolders (relative to --data-dir or absolute)")
    official = all((root / name).is_dir() for name in SPLIT_FOLDERS)
    parts = [root / name for name in SPLIT_FOLDERS] if official else [root]
    class_names = class_folders(parts[0])
    if official and class_folders(parts[1]) != class_names:
        raise DataError(f"{parts[1]}: its class folders {class_folders(parts[1])} differ from {parts[0]}'s {class_names}")
    listings = [list_classes(part, class_names, options.on_bad_file) for part in parts]
    files = [f for listing in listings for f in listing.files]
    skipped = [s for listing in listings for s in listing.skipped]
    return RawData(
        inputs=np.array([os.fsencode(f) for f in files], dtype=np.bytes_),
        labels=np.array([y for listing in listings for y in listing.labels], dtype=np.int32),
        class_names=class_names,
        preprocessor=FittedImageFiles(list(options.image_size), options.color_mode, options.scale,
                                      options.augment if options.augment.active() else None),
        is_test=np.repeat([False, True], [len(listings[0].files), len(listings[1].files)]) if official else None,
        test_fraction=options.test_fraction,
        files=[root],
        summary={"layout": "train/ and test/ folders" if official else "class folders", "images": len(files),
                 "skipped_files": len(skipped), **({"skipped": skipped[:SHOWN_SKIPS]} if skipped else {})},
    )


def class_folders(folder: Path) -> list[str]:
    """The class names: `folder`'s subfolders, sorted (hidden ones left out); at least two."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DataError(f"{folder}: found {len(names)} class folder(s) ({', '.join(names) or 'none'}); "
                        "image_folder needs one subfolder per class, at least two")
    return names


def list_classes(folder: Path, class_names: list[str], on_bad_file: str) -> Listing:
    """Every file under each class folder, checked (image_file_problem); a bad one stops the read or is skipped."""
    listing = Listing()
    for label, name in enumerate(class_names):
        found = 0
        for path in walk_files(folder / name):
            problem = image_file_problem(path)
            if problem:
                listing.skipped.append(f"{path}: {problem}")
                continue
            listing.files.append(path)
            listing.labels.append(label)
            found += 1
        if not found and not (listing.skipped and on_bad_file == "error"):
            raise DataError(f"{folder / name}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this class folder")
    if listing.skipped and on_bad_file == "error":  # every bad file named at once (up to 5), so they are fixed in one go
        named, more = "; ".join(listing.skipped[:5]), len(listing.skipped) - 5
        others = f"; and {more} more under {folder}" if more > 0 else ""
        several = len(listing.skipped) > 1
        raise DataError(f"{named}{others} -- remove {'them' if several else 'it'}, or set data.on_bad_file: skip to leave bad files out")
    return listing


def walk_files(folder: Path) -> list[Path]:
    """The files under `folder`, recursively, sorted by path; hidden files and folders (.DS_Store, .git) are left out."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(parent) / n for n in names if not n.startswith("."))
    return sorted(found)
