"""kexp's example plugin: importing the package registers its model and its dataset."""

from kexp_example import datasets, models  # noqa: F401  (registers two_tower and spirals)
