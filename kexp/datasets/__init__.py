"""Dataset loaders, one module per registered name (`data: {name: <module>}`)."""

from kexp.datasets import csv, image_folder, imdb, mnist, numpy, sms_spam, synthetic, text_csv  # noqa: F401  (registers loaders)
from kexp.datasets.base import Dataset, Split, resolve_data_dir  # noqa: F401
