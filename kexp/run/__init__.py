"""The run directory's single owner: every file name, the typed records, atomic writing, the run's life.

    files.py      every name in a run and a sweep directory (RunFiles, SweepFiles)
    io.py         atomic text and JSON, strict JSON, fsync, temp folders, SHA-256, time stamps (imports nothing of kexp)
    records.py    status, env, metrics, history, preprocessing, the sweep manifest: typed, read and written here
    dirs.py       new run directories, never reused
    lifecycle.py  a run held by one process: lock, status, heartbeat; resume; `crashed`
    saved.py      a finished run reopened for evaluate, predict and export

Every other module reads and writes run files through these. Nothing here imports TensorFlow.
The submodules are imported by name (`from kexp.run.records import read_status`): this package
imports none of them itself, so reading a run loads only what it needs.
"""
