"""Reusing a finished run: evaluate (its model on its own data again), predict (new raw inputs
through its saved preprocessing and model) and export (a checked SavedModel or TFLite file).

Nothing here trains or refits; each module opens the run through kexp.run and imports
TensorFlow only when it needs the model.
"""
