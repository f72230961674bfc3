import json
import subprocess
import sys

from kexp.run.io import write_json

# BackgroundPlots starts its helper only where matplotlib is not loaded yet: a fresh process
SCRIPT = """
import json, sys
from pathlib import Path
from kexp.report.plots import BackgroundPlots
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


def test_a_helper_stopped_mid_drawing_leaves_no_temporary_png(tmp_path):
    # The run failed (say a full disk) before it waited for its curves: close() kills the helper while it draws.
    from kexp.report.plots import BackgroundPlots

    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    plots = BackgroundPlots()
    plots.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    plots.draw(run)
    (run / "plots" / ".loss.tmp.png").write_bytes(b"\x89PNG half")  # what the helper had begun
    plots.close()
    assert list((run / "plots").iterdir()) == []


def test_a_png_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    import pytest

    from kexp.report.plots import save_png

    class FullDisk:
        def savefig(self, path, **_):
            path.write_bytes(b"\x89PNG half")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        save_png(FullDisk(), tmp_path / "loss.png")
    assert list(tmp_path.iterdir()) == []
