"""What many runs say: listed, compared, aggregated, drawn.

  runs.py       `kexp runs`: a runs directory read from its small files, one row per run
  compare.py    `kexp compare`: runs side by side (differing spec keys, metrics, seed groups), curves in one PNG
  aggregate.py  mean, sample std and 95% t-interval over folds, seeds and runs
  reports.py    per-class and regression reports, shared by evaluate and aggregation
  plots.py      learning curves from history.json (drawn by a helper process); confusion matrices
"""
