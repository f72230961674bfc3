"""Fitted preprocessing: fitted on the training part only, reapplied to anything later.

A dataset's reader returns an unfitted preprocessor with its raw data. The pipeline calls
`fit(inputs, train_rows)`, which returns a fitted preprocessor; its `transform(inputs, rows)`
turns raw inputs (a float32 feature table, uint8 images, or a tokenized text Corpus) into
arrays for Keras. A fitted preprocessor is saved as data, never by opening files itself:
`state()` gives a JSON-able dict and `from_document` rebuilds it, through the registered
kind, from what the run store read back, so `kexp evaluate` and `kexp predict` transform
without refitting. Each kind also reads new raw inputs for `kexp predict`.

    table   table.FittedTable    feature names; mean and std when standardize (fitted on train)
    images  images.FittedImages  image shape, scale to [0, 1], flatten (nothing to fit)
    image_files  image_files.FittedImageFiles  image size, color mode, scale: files decoded in the input pipeline
    text    text.FittedText      tokenization options, vocabulary, idf (fitted on train)
    arrays  arrays.FittedArrays  example shape, dtype, divisor (numpy; nothing to fit)
"""

from kexp.preprocessing.arrays import FittedArrays
from kexp.preprocessing.document import FORMAT_VERSION, SavedPreprocessing, from_document, load_saved, to_document
from kexp.preprocessing.image_files import FittedImageFiles, ImageFiles
from kexp.preprocessing.images import FittedImages
from kexp.preprocessing.inputs import BATCH_SIZE, RawInputs, Source
from kexp.preprocessing.kinds import KINDS, Fitted, Preprocessor, preprocessing_kind
from kexp.preprocessing.table import FittedTable, TableLayout, TablePreprocessor
from kexp.preprocessing.text import FittedText, TextPreprocessor

__all__ = [
    "BATCH_SIZE", "FORMAT_VERSION", "KINDS", "Fitted", "FittedArrays", "FittedImageFiles", "FittedImages", "ImageFiles", "FittedTable", "FittedText", "Preprocessor", "RawInputs",
    "SavedPreprocessing", "Source",
    "TableLayout", "TablePreprocessor", "TextPreprocessor", "from_document", "load_saved", "preprocessing_kind", "to_document",
]
