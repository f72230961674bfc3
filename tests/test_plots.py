import json
import subprocess
import sys

from kexp.rundir import write_json

# BackgroundPlots starts its helper only where matplotlib is not loaded yet: a fresh process
SCRIPT = """
import json, sys
from pathlib import Path
from kexp.plots import BackgroundPlots
run, case = Path(sys.argv[1]), sys.argv[2]
with BackgroundPlots() as plots:
    started = plots.process is not None
    if case == "helper_gone":
        plots.process.kill()
        plots.process.wait()
    plots.draw(run)
    try:
        written, error = [p.name for p in plots.wait(run)], None
    except Exception as exc:
        written, error = [], type(exc).__name__ + ": " + str(exc)
print(json.dumps({"started": started, "written": written, "error": error, "drawn_here": "matplotlib.figure" in sys.modules}))
"""


def plots_in_fresh_process(run_dir, case="normal") -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir), case], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def history(run_dir):
    run_dir.mkdir()
    write_json(run_dir / "history.json", {"epochs": 3, "epoch_seconds": [0.1] * 3, "loss": [0.9, 0.5, None], "accuracy": [0.5, 0.7, 0.8],
                                          "val_loss": [1.0, 0.6, 0.5]})
    return run_dir


def test_the_helper_process_draws_the_curves_and_the_run_never_loads_matplotlib(tmp_path):
    result = plots_in_fresh_process(history(tmp_path / "run"))
    assert result == {"started": True, "written": ["accuracy.png", "loss.png"], "error": None, "drawn_here": False}
    assert (tmp_path / "run" / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == ["accuracy.png", "loss.png"]  # no temporary files left


def test_a_helper_that_died_leaves_the_drawing_to_the_run_itself(tmp_path):
    result = plots_in_fresh_process(history(tmp_path / "run"), "helper_gone")
    assert result == {"started": True, "written": ["accuracy.png", "loss.png"], "error": None, "drawn_here": True}


def test_what_the_helper_cannot_draw_fails_in_the_run_as_it_would_without_it(tmp_path):
    (tmp_path / "run").mkdir()  # no history.json
    result = plots_in_fresh_process(tmp_path / "run")
    assert result["started"] and result["written"] == [] and "history.json" in result["error"]
