"""kexp sweep --method tpe / --prune: the space Optuna samples, the study in the sweep folder, pruning
verdicts, resume after a dead driver, and whole searches as real processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import smoke_spec, write_spec
from test_sweep import local_ray  # noqa: F401 - the fixture: a real local Ray head

from kexp.errors import SpecError
from kexp.sweep.insight import encode_choice
from kexp.sweep.space import SearchOptions, plan_sweep

optuna = pytest.importorskip("optuna")

from kexp.sweep.search import (  # noqa: E402 - only with optuna installed
    JOURNAL,
    Search,
    StudyError,
    decode_params,
    distributions,
    open_search,
    open_storage,
    redacted,
)


def search_spec(tmp_path: Path, sweep: dict | None = None, **changes) -> Path:
    spec = smoke_spec(**changes)
    if sweep is not None:
        spec["sweep"] = sweep
    return write_spec(tmp_path / "search.yaml", spec)


def tpe_plan(tmp_path: Path, params: list[str], **options):
    return plan_sweep(search_spec(tmp_path), [], params, search=SearchOptions(method="tpe", **options))


# --- the space --------------------------------------------------------------------------


@pytest.mark.parametrize(("param", "samples", "message"), [
    ("train.batch_size=8..8", 4, "sweep.params.train.batch_size: the range 8..8 is empty; tpe needs low < high"),
    ("train.optimizer.learning_rate=log:0..0.1", 4, "sweep.params.train.optimizer.learning_rate: a log range needs low > 0 (got 0)"),
    ("model.activation=relu", 4, "sweep.params.model.activation: one value (\"relu\") leaves tpe nothing to choose"),
    ("train.batch_size=8..64", None, "sweep.samples: tpe needs the number of trials: samples: N in the sweep section, or --samples N"),
])
def test_a_space_tpe_cannot_sample_is_refused_before_any_trial_naming_the_parameter(tmp_path, param, samples, message):
    with pytest.raises(SpecError) as caught:
        tpe_plan(tmp_path, [param], samples=samples)
    assert message in str(caught.value)


def test_tpe_plans_no_trials_but_validates_the_spaces_ends_and_records_its_metric_and_seed(tmp_path):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64", "model.hidden_units=[4],[8, 4]"], samples=5, prune="asha")
    assert plan.trials == [] and plan.space.method == "tpe" and plan.space.prune == "asha" and plan.space.metric == "accuracy"
    assert plan.base.base_seed == 0
    with pytest.raises(SpecError, match=r"the space's low end \(train.batch_size=0\): sweep point: train.batch_size"):
        tpe_plan(tmp_path, ["train.batch_size=0..64"], samples=5)  # the low end is not a valid spec value
    grid = plan_sweep(search_spec(tmp_path), [], ["train.batch_size=8,16"])
    assert plan_sweep(search_spec(tmp_path), [], ["train.batch_size=8,16"], search=SearchOptions()).fingerprint == grid.fingerprint
    assert [t["id"] for t in grid.trials] == ["trial-000", "trial-001"]


def test_list_values_travel_through_optuna_as_json_text_and_come_back_as_lists(tmp_path):
    plan = tpe_plan(tmp_path, ["model.hidden_units=[4],[8, 4]", "train.optimizer.learning_rate=log:0.001..0.1",
                               "train.batch_size=8..64"], samples=5)
    dists = distributions(plan.space)
    assert dists["model.hidden_units"].choices == ("[4]", "[8, 4]") and dists["train.optimizer.learning_rate"].log
    assert type(dists["train.batch_size"]).__name__ == "IntDistribution"
    point = decode_params(plan.space, {"model.hidden_units": encode_choice([8, 4]), "train.optimizer.learning_rate": 0.0123456789,
                                       "train.batch_size": 17})
    assert point == {"model.hidden_units": [8, 4], "train.optimizer.learning_rate": 0.0123457, "train.batch_size": 17}


# --- the study --------------------------------------------------------------------------


def fresh_search(folder: Path, plan, name: str = "study") -> Search:
    folder.mkdir(parents=True, exist_ok=True)
    return open_search(folder, plan.space, name, None, epochs=4, seed=plan.base.base_seed)


def test_a_sequential_tpe_search_with_the_same_seed_proposes_the_same_points(tmp_path):
    plan = tpe_plan(tmp_path, ["train.optimizer.learning_rate=log:0.0001..0.1", "train.batch_size=8..64"], samples=8)
    proposals = []
    for run in ("a", "b"):
        search, points = fresh_search(tmp_path / run, plan), []
        for _ in range(8):
            number, point = search.ask()
            search.tell(number, "completed", -abs(point["train.optimizer.learning_rate"] - 0.01))  # best near 0.01
            points.append(point)
        proposals.append(points)
        assert (tmp_path / run / JOURNAL).stat().st_size > 0
    assert proposals[0] == proposals[1] and len({json.dumps(p) for p in proposals[0]}) == 8
    other = fresh_search(tmp_path / "c", dataclasses.replace(plan, space=plan.space.model_copy(update={"sampler_seed": 7})))
    assert other.ask()[1] != proposals[0][0]


def test_a_study_reopened_from_its_journal_keeps_its_trials_and_numbers(tmp_path):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=4)
    search = fresh_search(tmp_path / "s", plan)
    first = [search.ask() for _ in range(2)]
    search.tell(first[0][0], "completed", 0.5)
    again = fresh_search(tmp_path / "s", plan)
    assert again.trial_count() == 2 and list(again.running_numbers()) == [1]
    assert again.running_numbers()[1] == first[1][1] and again.ask()[0] == 2


def test_a_damaged_journal_is_refused_with_the_file_named_never_restarted(tmp_path):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=4)
    search = fresh_search(tmp_path / "s", plan)
    search.ask()
    journal = tmp_path / "s" / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b'{"op_code": 4, "worker_id": \n' + b"".join(lines[1:]))
    size = journal.stat().st_size
    with pytest.raises(StudyError) as caught:
        fresh_search(tmp_path / "s", plan)
    assert str(journal) in str(caught.value) and "damaged" in str(caught.value) and journal.stat().st_size == size


def test_an_unreachable_storage_stops_in_seconds_with_one_line_and_no_password(tmp_path):
    pytest.importorskip("psycopg")
    start = time.monotonic()
    with pytest.raises(StudyError) as caught:
        open_storage(tmp_path, "postgresql://kexp:secret@127.0.0.1:9/kexp")
    assert time.monotonic() - start < 15
    message = str(caught.value)
    assert message.startswith("--storage postgresql://kexp:***@127.0.0.1:9/kexp: cannot open the study storage")
    assert "secret" not in message and "\n" not in message
    assert redacted("postgresql://u:p@h/db") == "postgresql://u:***@h/db" and redacted("sqlite:///x.db") == "sqlite:///x.db"


def pruned_in_second_batch(folder: Path, plan) -> int | None:
    """Batch one: three finished trials (0.9, 0.8, 0.7 after epoch 1); then, in batch two, a fast trial reports 0.95
    before a slow one reports 0.92: where is the slow one pruned?"""
    search = fresh_search(folder, plan)
    for i, value in enumerate((0.9, 0.8, 0.7)):
        number, _ = search.ask()
        search.note(number, {"id": f"trial-00{i}", "epochs": 4})
        search.observe(number, [value])
        search.tell(number, "completed", value)
    search.start_batch()
    fast, slow = search.ask()[0], search.ask()[0]
    for number in (fast, slow):
        search.note(number, {"id": f"trial-00{number}", "epochs": 4})
    assert search.observe(fast, [0.95]) is None
    return search.observe(slow, [0.92])


def test_with_sync_a_trial_is_judged_against_earlier_batches_only(tmp_path):
    space = ["train.batch_size=8..64"]
    assert pruned_in_second_batch(tmp_path / "async", tpe_plan(tmp_path, space, samples=8, prune="asha")) == 1  # depends on timing
    assert pruned_in_second_batch(tmp_path / "sync", tpe_plan(tmp_path, space, samples=8, prune="asha", sync=True)) is None
    hyperband = tpe_plan(tmp_path, space, samples=8, prune="hyperband", sync=True)
    assert pruned_in_second_batch(tmp_path / "hb", hyperband) == pruned_in_second_batch(tmp_path / "hb2", hyperband)


def test_observe_reports_each_epoch_once_and_prunes_a_hopeless_trial_not_at_its_last_epoch(tmp_path):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=8, prune="asha")
    search = fresh_search(tmp_path / "s", plan)
    good, _ = search.ask()
    search.note(good, {"id": "trial-000", "epochs": 3})
    assert search.observe(good, [0.9]) is None and search.observe(good, [0.9, 0.95, 0.97]) is None
    assert search.frozen(good).intermediate_values == {1: 0.9, 2: 0.95, 3: 0.97}
    search.tell(good, "completed", 0.97)
    bad, _ = search.ask()
    search.note(bad, {"id": "trial-001", "epochs": 3})
    assert search.observe(bad, [0.2]) == 1
    last, _ = search.ask()
    search.note(last, {"id": "trial-002", "epochs": 1})
    assert search.observe(last, [0.1]) is None  # its only epoch: nothing left to save by stopping it


# --- the sweep folder after a dead driver --------------------------------------------------


def test_a_trial_asked_by_a_driver_that_died_before_writing_the_manifest_is_adopted_under_its_number(tmp_path):
    from kexp.sweep.proposals import adopt_orphans, new_search_trial, settings_for
    from kexp.sweep.trials import create_sweep_dir, open_manifest

    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=4)
    sweep_dir = create_sweep_dir(tmp_path / "runs", plan, settings_for(plan, None, 1))
    search = open_search(sweep_dir, plan.space, "study", None, epochs=2, seed=0)
    number, point = search.ask()  # ... and the driver is killed here
    manifest = open_manifest(sweep_dir)
    adopted = adopt_orphans(manifest, search, lambda n, p: new_search_trial(sweep_dir, plan.base, n, p, 4, 2), shared=False)
    assert adopted == ["trial-000"] and manifest["trials"][0]["params"] == point and manifest["trials"][0]["number"] == number
    assert (sweep_dir / "specs" / "trial-000.yaml").is_file()
    assert adopt_orphans(manifest, search, None, shared=False) == []  # known now


def test_a_pruned_run_says_so_in_its_status_and_in_kexp_runs(tmp_path):
    from typer.testing import CliRunner

    from kexp.cli import app
    from kexp.run.lifecycle import mark_pruned
    from kexp.run.records import read_status, write_status

    run_dir = tmp_path / "runs" / "20261207-120000-smoke-abcd"
    run_dir.mkdir(parents=True)
    write_spec(run_dir / "config.yaml", smoke_spec())
    write_status(run_dir, "interrupted", error="interrupted by SIGTERM", signal="SIGTERM", epoch=1, exit_code=143)
    mark_pruned(run_dir, 1, "accuracy", 0.31)
    status = read_status(run_dir)
    assert (status.state, status.error, status.document["pruned_at"], status.exit_code) == ("pruned", None, 1, 143)
    assert status.document["pruned_by"] == "the sweep's pruner: accuracy 0.31 at epoch 1"
    shown = CliRunner().invoke(app, ["runs", str(tmp_path / "runs"), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)[0]["status"] == "pruned"


# --- whole searches, as a user runs them ---------------------------------------------------


def kexp(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexp", *args], capture_output=True, text=True, timeout=timeout)


def learning_rate_search(tmp_path: Path) -> Path:
    """A space where tiny learning rates are hopeless after one epoch: the pruner has something to prune."""
    return search_spec(tmp_path, data={"name": "synthetic", "samples": 600, "features": 4, "classes": 3},
                       train={"epochs": 4, "batch_size": 16, "validation_split": 0.2, "loop": "keras", "deterministic": True,
                              "optimizer": {"name": "adam", "learning_rate": 0.01}})


SEARCH = ("--param", "train.optimizer.learning_rate=log:0.00001..0.3", "--method", "tpe", "--prune", "asha")


@pytest.mark.long
@pytest.mark.slow
def test_a_tpe_search_with_pruning_runs_its_trials_in_parallel_and_marks_the_pruned(tmp_path):
    config, runs = learning_rate_search(tmp_path), tmp_path / "runs"
    done = kexp("sweep", str(config), *SEARCH, "--samples", "6", "--parallel", "2", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr + done.stdout
    [sweep_dir] = (runs / "sweeps").iterdir()
    trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(6)) and [t["id"] for t in trials] == [f"trial-00{i}" for i in range(6)]
    states = {t["state"] for t in trials}
    assert states <= {"completed", "pruned"} and "pruned" in states, trials
    for t in trials:
        status = json.loads((sweep_dir / t["run_dir"] / "status.json").read_text())
        assert status["state"] == t["state"]
        if t["state"] == "pruned":
            assert t["pruned_at"] >= 1 and t["value"] is None and status["pruned_at"] == t["pruned_at"]
            assert re.search(rf"{t['id']}  .*  pruned  .*at epoch {t['pruned_at']} \(accuracy 0\.\d+\)", done.stdout), done.stdout
        else:
            assert isinstance(t["value"], float)
    study = optuna.load_study(study_name=json.loads(json.dumps(__import__("yaml").safe_load(
        (sweep_dir / "sweep.yaml").read_text())["search"]))["study"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL))))
    assert [t.state.name for t in study.trials] == [{"completed": "COMPLETE", "pruned": "PRUNED"}[t["state"]] for t in trials]
    listed = kexp("runs", str(sweep_dir), "--format", "json")
    assert sorted(r["status"] for r in json.loads(listed.stdout)) == sorted(t["state"] for t in trials)


@pytest.mark.long
@pytest.mark.slow
def test_pruning_stops_ray_tasks_too(tmp_path, local_ray):  # noqa: F811 - the fixture
    config, runs = learning_rate_search(tmp_path), tmp_path / "runs"
    done = kexp("sweep", str(config), *SEARCH, "--samples", "6", "--parallel", "2", "--backend", "ray", "--address", local_ray,
                "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr + done.stdout
    [sweep_dir] = (runs / "sweeps").iterdir()
    trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    assert {t["state"] for t in trials} == {"completed", "pruned"}, trials
    for t in trials:
        assert json.loads((sweep_dir / t["run_dir"] / "status.json").read_text())["state"] == t["state"]
        assert (sweep_dir / "logs" / f"{t['id']}.txt").read_text().startswith("kexp sweep: Ray task on node ")


@pytest.mark.long
@pytest.mark.slow
def test_sync_proposes_byte_identical_parameters_twice(tmp_path):
    config, runs = learning_rate_search(tmp_path), tmp_path / "runs"
    params = []
    for _ in range(2):
        done = kexp("sweep", str(config), *SEARCH, "--samples", "6", "--parallel", "2", "--sync", "--new", "--runs-dir", str(runs))
        assert done.returncode == 0, done.stderr + done.stdout
    for sweep_dir in sorted((runs / "sweeps").iterdir()):
        trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
        params.append(json.dumps([(t["params"], t["state"]) for t in trials]))
    assert params[0] == params[1]


def wait_for(predicate, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.long
@pytest.mark.slow
def test_kill_9_of_the_driver_and_its_trials_then_resume_ends_with_every_trial_once(tmp_path):
    config, runs = learning_rate_search(tmp_path), tmp_path / "runs"
    command = [sys.executable, "-m", "kexp", "sweep", str(config), *SEARCH, "--samples", "6", "--parallel", "2", "--runs-dir", str(runs)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def two_finished_and_one_training() -> bool:
        found = list(runs.glob("sweeps/*/manifest.json"))
        if not found:
            return False
        trials = json.loads(found[0].read_text())["trials"]
        return sum(t["state"] in ("completed", "pruned") for t in trials) >= 2 and any(t["state"] == "running" for t in trials)

    assert wait_for(two_finished_and_one_training), driver.stderr.read() if driver.poll() is not None else "timed out"
    [sweep_dir] = (runs / "sweeps").iterdir()
    driver.kill()
    for trial in json.loads((sweep_dir / "manifest.json").read_text())["trials"]:  # the trials too: a node that went down
        if trial["state"] == "running":
            with contextlib.suppress(ProcessLookupError):
                os.kill(trial["process"]["pid"], signal.SIGKILL)
    driver.communicate(timeout=60)
    before = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    finished = {t["id"]: (sweep_dir / t["run_dir"] / "history.json").read_bytes() for t in before if t["state"] in ("completed", "pruned")}

    resumed = kexp("sweep", "--resume", str(sweep_dir))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    trials = json.loads((sweep_dir / "manifest.json").read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(6)) and len({json.dumps(t["params"]) for t in trials}) == 6
    assert {t["state"] for t in trials} <= {"completed", "pruned"}
    assert all((sweep_dir / trial_id / "history.json").read_bytes() == data for trial_id, data in finished.items())
    interrupted = [t for t in trials if t["id"] not in finished and t["attempts"] >= 2]
    assert interrupted, "a trial killed mid-training is continued in place"
    assert sorted(p.name for p in sweep_dir.glob("trial-*")) == [t["id"] for t in trials]


# --- a study shared through PostgreSQL ------------------------------------------------------


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL that KEXP_TEST_POSTGRES names (.ci/run starts one with .ci/postgres.sh)."""
    psycopg = pytest.importorskip("psycopg")
    url = os.environ.get("KEXP_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set KEXP_TEST_POSTGRES=postgresql://user:pass@host:port/db (.ci/postgres.sh starts one)")
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {redacted(url)} is not reachable: {str(exc).splitlines()[0]}")
    name = f"kexp_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    admin.execute(f"CREATE DATABASE {name}")
    yield url.rsplit("/", 1)[0] + f"/{name}"
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.mark.long
def test_a_study_in_postgresql_is_shared_by_two_searches_and_keeps_their_numbers(tmp_path, postgres_url):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=4)
    one = open_search(tmp_path / "a", plan.space, "shared", postgres_url, epochs=2, seed=0)
    other = open_search(tmp_path / "b", plan.space, "shared", postgres_url, epochs=2, seed=0)
    numbers = [one.ask()[0], other.ask()[0], one.ask()[0]]
    assert numbers == [0, 1, 2] and other.trial_count() == 3
    one.tell(0, "completed", 0.5)
    assert list(other.running_numbers()) == [1, 2]


@pytest.mark.long
@pytest.mark.slow
def test_two_drivers_share_one_study_through_postgresql(tmp_path, postgres_url):
    config, password = learning_rate_search(tmp_path), f":{urllib.parse.urlparse(postgres_url).password}@"
    command = [sys.executable, "-m", "kexp", "sweep", str(config), *SEARCH, "--samples", "4", "--storage", postgres_url]
    drivers = [subprocess.Popen([*command, "--runs-dir", str(tmp_path / f"node{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in (0, 1)]
    for driver in drivers:
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err + out
        assert password not in out + err
    numbers = []
    for i in (0, 1):
        [sweep_dir] = (tmp_path / f"node{i}" / "sweeps").iterdir()
        assert not (sweep_dir / JOURNAL).exists()
        numbers += [t["number"] for t in json.loads((sweep_dir / "manifest.json").read_text())["trials"]]
        assert ":***@" in (sweep_dir / "sweep.yaml").read_text() and password not in (sweep_dir / "sweep.yaml").read_text()
    assert sorted(numbers) == [0, 1, 2, 3]
    study = optuna.load_study(study_name=None, storage=postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    assert len(study.trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)


# --- bad input at the command line ------------------------------------------------------------


def cli(*args: str):
    from typer.testing import CliRunner

    from kexp.cli import app

    return CliRunner().invoke(app, list(args))


def test_the_command_line_refuses_a_space_tpe_cannot_sample_in_one_line_before_any_trial(tmp_path):
    result = cli("sweep", str(search_spec(tmp_path)), "--method", "tpe", "--param", "train.batch_size=8..8", "--samples", "3",
                 "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "kexp: error: sweep.params.train.batch_size: the range 8..8 is empty; tpe needs low < high"]
    assert not (tmp_path / "runs").exists()
    assert cli("sweep", str(search_spec(tmp_path)), "--method", "bayes", "--param", "train.batch_size=8..9").exit_code == 2
    both = cli("validate", str(search_spec(tmp_path, {"method": "tpe", "params": {"train.batch_size": {"low": 8, "high": 8}}})))
    assert both.exit_code == 2 and [line.split(": ", 2)[-1].split(":")[0] for line in both.output.strip().splitlines()] == [
        "sweep.samples", "sweep.params.train.batch_size"]  # every problem of the section at once


def test_a_damaged_journal_stops_a_continued_sweep_with_the_file_named(tmp_path):
    from kexp.sweep.proposals import settings_for
    from kexp.sweep.trials import create_sweep_dir

    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=4)
    sweep_dir = create_sweep_dir(tmp_path / "runs", plan, settings_for(plan, None, 1))
    open_search(sweep_dir, plan.space, settings_for(plan, None, 1).study, None, epochs=2, seed=0).ask()
    journal = sweep_dir / JOURNAL
    journal.write_bytes(b"garbage\n" + journal.read_bytes())
    result = cli("sweep", "--resume", str(sweep_dir))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"kexp: error: {journal}: the study journal is damaged")
    assert journal.read_bytes().startswith(b"garbage\n")


def test_an_unreachable_storage_stops_the_sweep_in_seconds(tmp_path):
    pytest.importorskip("psycopg")
    start = time.monotonic()
    result = cli("sweep", str(search_spec(tmp_path)), "--method", "tpe", "--param", "train.batch_size=8..64", "--samples", "3",
                 "--storage", "postgresql://kexp:hunter2@127.0.0.1:9/kexp", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and time.monotonic() - start < 20
    [line] = result.output.strip().splitlines()
    assert line.startswith("kexp: error: --storage postgresql://kexp:***@127.0.0.1:9/kexp: cannot open the study storage")
    assert "hunter2" not in result.output


def test_sync_resumed_mid_batch_judges_the_batch_against_the_same_earlier_trials(tmp_path):
    plan = tpe_plan(tmp_path, ["train.batch_size=8..64"], samples=8, sync=True)
    search = fresh_search(tmp_path / "s", plan)
    for _ in range(2):  # batch one (of two), finished
        number, _ = search.ask()
        search.tell(number, "completed", 0.5)
    search.start_batch()
    search.ask()
    number, _ = search.ask()
    search.tell(number, "completed", 0.6)  # one trial of batch two ended, one still runs: the driver dies here
    again = fresh_search(tmp_path / "s", plan)
    again.resume_batch(2)
    assert again.batch_start == search.batch_start == 2


def test_the_summary_says_why_a_point_has_no_value_and_a_repeated_point_is_not_called_seeds():
    from kexp.cli.results import describe_best, not_completed

    trials = [{"id": "trial-000", "params": {"b": 39}, "seed": 7, "state": "completed"},
              {"id": "trial-001", "params": {"b": 31}, "seed": 7, "state": "pruned"},
              {"id": "trial-002", "params": {"b": 39}, "seed": 7, "state": "completed"}]
    states = {t["id"]: t["state"] for t in trials}
    assert not_completed({"trials": ["trial-001"]}, states) == "1 pruned" and not_completed({"trials": ["trial-000"]}, states) == ""
    best = {"id": "trial-000", "params": {"b": 39}, "part": "train", "value": 0.5872, "std": 0.0, "n": 2, "command": "kexp train x"}
    line = describe_best({"best": best, "trials": trials, "metric": "accuracy"})
    assert "± 0.0000 over 2 trials of this point" in line
    seeded = [{**t, "seed": i} for i, t in enumerate(trials)]
    assert "over 2 seeds" in describe_best({"best": best, "trials": seeded, "metric": "accuracy"})
