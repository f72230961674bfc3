"""kexp.report.aggregate: mean, sample std and t-interval by hand, members' metrics, runs grouped by spec."""

from __future__ import annotations

import math

import pytest

from kexp.report.aggregate import aggregate_members, flatten_spec, group_runs_by_spec, summarize_values, t_quantile_975


def test_summarize_values_matches_the_formulas_worked_by_hand():
    values = [0.70, 0.74, 0.76, 0.78, 0.82]
    mean = 3.80 / 5  # 0.76
    # squared deviations: 0.0036 + 0.0004 + 0 + 0.0004 + 0.0036 = 0.008; / (n - 1) = 0.002
    std = math.sqrt(0.002)
    half = 2.776445 * std / math.sqrt(5)  # t(0.975, df=4) from any t table: 2.776
    summary = summarize_values(values)
    assert summary["n"] == 5
    assert summary["mean"] == pytest.approx(mean, abs=1e-12)
    assert summary["std"] == pytest.approx(std, abs=1e-12)
    assert summary["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-6)
    assert summary["ci95"] == pytest.approx([0.70447, 0.81553], abs=1e-5)


@pytest.mark.parametrize(("df", "quantile"), [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)])
def test_t_quantile_matches_the_published_table(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=5e-4)


def test_summarize_values_few_values_and_nulls():
    assert summarize_values([]) == {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    assert summarize_values([None, None]) == {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    # one value: no spread to measure, so no interval either
    assert summarize_values([0.8]) == {"mean": 0.8, "std": 0.0, "ci95": [None, None], "n": 1}
    # a diverged member's null is left out, and n says so
    two = summarize_values([0.6, None, 0.8])
    assert two["n"] == 2 and two["mean"] == pytest.approx(0.7) and two["std"] == pytest.approx(math.sqrt(0.02))
    assert two["ci95"] == pytest.approx([0.7 - 12.7062 * math.sqrt(0.02) / math.sqrt(2), 0.7 + 12.7062 * math.sqrt(0.02) / math.sqrt(2)], rel=1e-5)
    # identical values: zero width, not NaN
    assert summarize_values([0.5, 0.5, 0.5]) == {"mean": 0.5, "std": 0.0, "ci95": [0.5, 0.5], "n": 3}


def test_aggregate_members_summarizes_each_split_and_metric():
    members = [
        {"name": "fold-0", "seed": 0, "train": {"accuracy": 0.9, "loss": 0.2}, "validation": None, "test": {"accuracy": 0.70, "loss": 0.6}, "epochs_completed": 3},
        {"name": "fold-1", "seed": 0, "train": {"accuracy": 0.8, "loss": 0.3}, "validation": None, "test": {"accuracy": 0.80, "loss": None}, "epochs_completed": 3},
        {"name": "fold-2", "seed": 0, "train": {"accuracy": 0.7, "loss": 0.4}, "test": {"accuracy": 0.75, "loss": 0.5,
                                                                                     "per_class": {"spam": {"f1": 0.5, "support": 10}}, "note": "text"}},
    ]
    result = aggregate_members(members)
    assert set(result) == {"train", "test"}  # no member has validation numbers
    assert result["train"]["accuracy"]["mean"] == pytest.approx(0.8) and result["train"]["accuracy"]["std"] == pytest.approx(0.1)
    assert result["test"]["accuracy"] == summarize_values([0.70, 0.80, 0.75])
    assert result["test"]["loss"]["n"] == 2 and result["test"]["loss"]["mean"] == pytest.approx(0.55)  # the null is skipped
    assert result["test"]["per_class.spam.f1"] == {"mean": 0.5, "std": 0.0, "ci95": [None, None], "n": 1}
    assert "note" not in result["test"] and list(result["test"])[:2] == ["accuracy", "loss"]
    # other parts by name, as training aggregates its per-class "report"
    reports = [{"report": {"balanced_accuracy": v}} for v in (0.6, 0.7)]
    assert aggregate_members(reports, parts=("report",)) == {"report": {"balanced_accuracy": summarize_values([0.6, 0.7], "balanced_accuracy")}}
    assert aggregate_members(reports) == {}


def test_flatten_spec_uses_dotted_paths_and_keeps_lists_whole():
    spec = {"name": "x", "data": {"name": "pima", "split_seed": None}, "model": {"hidden_units": [12, 8]}, "train": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "early_stopping": {}}}
    assert flatten_spec(spec) == {
        "name": "x", "data.name": "pima", "data.split_seed": None, "model.hidden_units": [12, 8],
        "train.optimizer.name": "adam", "train.optimizer.learning_rate": 0.01, "train.early_stopping": {},
    }


def test_group_runs_by_spec_ignores_only_the_seeds():
    def spec(seed, lr=0.01, split_seed=None, seeds=None):
        return {"name": "pima", "seed": seed, "seeds": seeds, "data": {"name": "pima", "split_seed": split_seed}, "train": {"optimizer": {"name": "adam", "learning_rate": lr}}}

    runs = [("a", spec(1)), ("b", spec(2, lr=0.1)), ("c", spec(2)), ("d", spec(3, split_seed=5)), ("e", spec(1, lr=0.1)), ("f", spec(4, seeds=[4, 5]))]
    assert group_runs_by_spec(runs) == [["a", "c", "d", "f"], ["b", "e"]]
    # a key order that differs between files is still the same spec
    assert group_runs_by_spec([("a", {"x": 1, "y": 2, "seed": 1}), ("b", {"y": 2, "x": 1, "seed": 2})]) == [["a", "b"]]
    assert group_runs_by_spec(runs, ignore=()) == [[run_id] for run_id, _ in runs]


def test_an_interval_past_a_metrics_range_is_clipped_and_says_so():
    raw = summarize_values([1.0, 0.9967, 1.0])
    assert raw["ci95"][1] > 1.0 and "ci95_clipped" not in raw  # the bare t-interval: [0.9923, 1.0054]
    clipped = summarize_values([1.0, 0.9967, 1.0], "accuracy")
    assert clipped["ci95"] == [raw["ci95"][0], 1.0] and clipped["ci95_clipped"] is True
    assert summarize_values([1.0, 0.9967, 1.0], "f1.spam")["ci95"][1] == 1.0
    assert summarize_values([0.01, 0.3, 0.002], "loss")["ci95"][0] == 0.0
    assert "ci95_clipped" not in summarize_values([0.7, 0.75, 0.8], "accuracy")
