"""`kexp sweep`: one ordinary run per point of a parameter space.

  space.py        the space (grid, ranges, random samples), read from the spec's `sweep:` and --param, planned into trials
  trials.py       the sweep directory and manifest, trials run as child processes a few at a time, resumed in place
  ray_backend.py  the same trial command as a Ray task (`--backend ray`)
  summary.py      summary.json / .csv / .png of a finished sweep
  insight.py      what a search adds to it: optimization history, parameter importance, pruned trials
  summary_plots.py  the history and importance panels of summary.png
"""
