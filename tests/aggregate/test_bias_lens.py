"""The bias lens: per-group statistics and sensitive-feature shares equal a direct computation,
merge and store exactly, and tell a model that relies on sex from one that does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import BiasLensError, GlobalExplanation, GroupStats, aggregate
from dlbacktrace.aggregate.bias import ALL_ROWS, resolve_sensitive
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp

FEMALE = "status_sex=female : divorced/separated/married"


@pytest.fixture(scope="module")
def german():
    """German credit (standardised), the applicants' sex as groups, and two small models: one
    trained on a label that *is* the sex, one on a label made of duration and amount only."""
    data = load_german_credit()
    train, test = data.split(0.2, seed=0)
    names = data.feature_names
    female = names.index(FEMALE)
    duration, amount = names.index("duration"), names.index("credit_amount")

    def by_sex(part):
        return (part.x[:, female] > 0).astype(np.int64)

    def by_loan(part):
        return (part.x[:, duration] + part.x[:, amount] > 0).astype(np.int64)

    options = {"n_classes": 2, "hidden": (32,), "epochs": 30, "weight_decay": 1e-2}
    biased = train_tabular_mlp(train.x, by_sex(train), **options)
    control = train_tabular_mlp(train.x, by_loan(train), **options)
    sex = np.where(test.x[:, female] > 0, "female", "male")
    return test, names, sex, biased, control


def _shares(R: np.ndarray, cols: list[int]) -> np.ndarray:
    a = np.abs(R)
    return a[:, cols].sum(1) / a.sum(1)


def test_group_statistics_and_shares_equal_direct_computation(german):
    test, names, sex, _, model = german
    frame = pd.DataFrame(test.x, columns=names)
    g = aggregate(model, frame, groups=sex, sensitive=["status_sex", "age"], batch_size=64)
    R = Backtrace(model).explain(torch.from_numpy(test.x)).relevance.double().numpy()
    sex_cols = [i for i, n in enumerate(names) if n.startswith("status_sex=")]
    assert len(sex_cols) == 4 and g.groups.sensitive == {"status_sex": sex_cols,
                                                          "age": [names.index("age")]}
    table = g.group_table()
    shares = g.sensitive_shares().set_index(["sensitive", "group"])
    for group in ("female", "male"):
        rows = R[sex == group]
        part = table[table["group"] == group]
        assert list(part["feature"]) == names and (part["count"] == len(rows)).all()
        np.testing.assert_allclose(part["mean"], rows.mean(0), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(part["mean_abs"], np.abs(rows).mean(0), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(part["std"], rows.std(0, ddof=1), rtol=1e-4, atol=1e-9)
    for name, cols in g.groups.sensitive.items():
        for group, mask in (("female", sex == "female"), ("male", sex == "male"),
                            (ALL_ROWS, np.ones(len(sex), bool))):
            s = _shares(R[mask], cols)
            row = shares.loc[(name, group)]
            assert row["rows"] == mask.sum()
            np.testing.assert_allclose(row["share"], s.mean(), rtol=1e-5)
            np.testing.assert_allclose(row["stderr"], s.std(ddof=1) / np.sqrt(len(s)), rtol=1e-4)
    # the group column is not a feature, and the per-class statistics are untouched by it
    plain = aggregate(model, frame, batch_size=64)
    np.testing.assert_array_equal(plain.class_maps(), g.class_maps())


def test_a_model_relying_on_sex_gives_sex_a_large_share_and_the_control_a_small_one(german):
    test, names, sex, biased, control = german
    results = {}
    for label, model in (("biased", biased), ("control", control)):
        g = aggregate(model, test.x, feature_names=names, groups=sex,
                      sensitive={"sex": ["status_sex"]}, batch_size=200)
        overall = g.sensitive_shares().set_index("group").loc[ALL_ROWS]
        results[label] = (overall["share"], overall["stderr"])
    (b, b_se), (c, c_se) = results["biased"], results["control"]
    # 4 of the 61 columns would get 0.066 under an even spread: the biased model puts most of
    # its relevance there, the control less than an even spread would.
    assert b > 0.5 and c < 0.066
    assert b - c > 20 * np.hypot(b_se, c_se)


def test_group_stats_by_hand_merge_and_zero_rows():
    rel = np.array([[1.0, -1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    one = GroupStats.from_batch("x", rel, np.array(["a", "b", "a"]), {"s": [0]})
    np.testing.assert_array_equal(one.count, [2, 1])
    np.testing.assert_array_equal(one.sums["sum"], [[4, 0, 2], [0, 0, 0]])
    np.testing.assert_array_equal(one.sums["sumabs"], [[4, 2, 2], [0, 0, 0]])
    frame = one.share_frame().set_index("group")
    # shares of group a: 1/4 and 3/4 -> mean 0.5, std 0.3536, stderr 0.25; b's row is all zero
    assert frame.loc["a", "rows"] == 2 and frame.loc["b", "rows"] == 0
    np.testing.assert_allclose(frame.loc["a", ["share", "stderr"]].to_numpy(float), [0.5, 0.25])
    assert np.isnan(frame.loc["b", "share"])
    other = GroupStats.from_batch("x", np.array([[0.0, 0.0, 1.0]]), np.array(["c"]), {"s": [0]})
    one.merge(other)
    assert one.names == ["a", "b", "c"]
    np.testing.assert_array_equal(one.count, [2, 1, 1])
    np.testing.assert_array_equal(one.shares["n"][:, 0], [2, 0, 1])
    overall = one.share_frame().set_index("group").loc[ALL_ROWS]
    np.testing.assert_allclose(overall["share"], (0.25 + 0.75 + 0.0) / 3)
    with pytest.raises(BiasLensError, match="different inputs or sensitive"):
        one.merge(GroupStats.from_batch("x", rel, np.array(["a"] * 3), {"t": [1]}))


def test_batching_does_not_change_the_lens_and_it_is_stored(german, tmp_path):
    test, names, sex, biased, _ = german
    opts = {"feature_names": names, "groups": sex, "sensitive": ["status_sex"]}
    whole = aggregate(biased, test.x, batch_size=200, **opts)
    parts = aggregate(biased, test.x, batch_size=37, **opts)
    assert whole.groups.names == parts.groups.names == ["female", "male"]
    np.testing.assert_array_equal(whole.groups.count, parts.groups.count)
    for f in ("sum", "sumabs"):
        np.testing.assert_allclose(parts.groups.sums[f], whole.groups.sums[f], rtol=1e-5,
                                   atol=1e-9)
    np.testing.assert_allclose(parts.groups.shares["sum"], whole.groups.shares["sum"], rtol=1e-5)
    loaded = GlobalExplanation.load(parts.save(tmp_path / "g.npz"))
    pd.testing.assert_frame_equal(loaded.sensitive_shares(), parts.sensitive_shares())
    pd.testing.assert_frame_equal(loaded.group_table(), parts.group_table())
    assert loaded.to_json()["groups"]["counts"] == {"female": 55, "male": 145}


def test_resume_with_other_groups_is_refused(german, tmp_path):
    test, names, sex, biased, _ = german
    checkpoint = tmp_path / "ck.npz"
    aggregate(biased, test.x[:40], groups=sex[:40], batch_size=20, checkpoint=checkpoint)
    with pytest.raises(Exception, match="differs in: groups"):
        aggregate(biased, test.x[:40], groups=sex[::-1][:40], batch_size=20,
                  checkpoint=checkpoint)


def test_resolve_sensitive_columns_prefixes_and_mappings():
    labels = ["age", "sex=f", "sex=m", "income", "agency"]
    assert resolve_sensitive(["age"], labels) == {"age": [0]}  # exact: not 'agency'
    assert resolve_sensitive(["sex"], labels) == {"sex": [1, 2]}
    assert resolve_sensitive({"who": ["age", "sex"]}, labels) == {"who": [0, 1, 2]}
    assert resolve_sensitive("age, income", labels) == {"age": [0], "income": [3]}
    with pytest.raises(BiasLensError, match="did you mean 'status_sex'"):
        resolve_sensitive(["sex"], ["status_sex=male", "status_sex=female", "age"])
    with pytest.raises(BiasLensError, match="matches no column"):
        resolve_sensitive(["height"], labels)


def test_bad_groups_give_clear_errors(german):
    test, names, sex, biased, _ = german
    with pytest.raises(BiasLensError, match="column name needs DataFrame"):
        aggregate(biased, test.x, groups="sex")
    with pytest.raises(BiasLensError, match="199 group values for 200 rows"):
        aggregate(biased, test.x, groups=sex[:-1])
    with pytest.raises(BiasLensError, match="sensitive= needs groups="):
        aggregate(biased, test.x, sensitive=["x1"])
    with pytest.raises(BiasLensError, match="group column 'nope' not in"):
        aggregate(biased, pd.DataFrame(test.x, columns=names), groups="nope")
    with pytest.raises(BiasLensError, match="not iterables"):
        aggregate(biased, [torch.from_numpy(test.x[:4])], groups=sex[:4])
    with pytest.raises(Exception, match="no group statistics"):
        aggregate(biased, test.x[:8], batch_size=8).sensitive_shares()


def test_group_column_of_a_frame_is_left_out_of_the_features(german):
    test, names, sex, biased, _ = german
    frame = pd.DataFrame(test.x[:30], columns=names).assign(sex=sex[:30])
    g = aggregate(biased, frame, groups="sex", batch_size=30)
    assert g.feature_labels() == names
    np.testing.assert_array_equal(g.groups.count,
                                  [(sex[:30] == "female").sum(), (sex[:30] == "male").sum()])


def test_contrast_mode_shares_are_of_the_net_map(german):
    test, names, sex, biased, _ = german
    g = aggregate(biased, test.x, feature_names=names, groups=sex, sensitive=["age"],
                  mode="contrast", batch_size=200)
    net = Backtrace(biased).explain(torch.from_numpy(test.x), mode="contrast")
    s = _shares(net.relevance.double().numpy(), [names.index("age")])
    overall = g.sensitive_shares().set_index("group").loc[ALL_ROWS]
    np.testing.assert_allclose(overall["share"], s.mean(), rtol=1e-5)


def test_an_interrupted_grouped_run_resumes_to_the_same_bits(german, tmp_path):
    test, names, sex, biased, _ = german
    opts = {"feature_names": names, "groups": sex, "sensitive": ["status_sex"],
            "batch_size": 20}
    full = aggregate(biased, test.x, **opts)
    bt = Backtrace(biased)
    original, calls = bt.explain, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    bt.explain = failing
    checkpoint = tmp_path / "state.npz"
    with pytest.raises(KeyboardInterrupt):
        aggregate(bt, test.x, checkpoint=checkpoint, checkpoint_every=2, **opts)
    assert GlobalExplanation.load(checkpoint).groups.count.sum() == 80  # 4 batches saved
    bt.explain = original
    resumed = aggregate(bt, test.x, checkpoint=checkpoint, checkpoint_every=2, **opts)
    for f in ("sum", "sumabs", "sumsq"):
        np.testing.assert_array_equal(resumed.groups.sums[f], full.groups.sums[f])
    np.testing.assert_array_equal(resumed.groups.shares["sum"], full.groups.shares["sum"])
    np.testing.assert_array_equal(resumed.groups.count, full.groups.count)


def test_named_importance(german):
    test, names, _, biased, _ = german
    g = aggregate(biased, test.x[:50], feature_names=names, class_names=["no", "yes"],
                  batch_size=50)
    series = g.importance(named=True)
    assert list(series.index) == names and series.name == "importance"
    np.testing.assert_array_equal(series.to_numpy(), g.importance())
    assert series.idxmax() == names[int(np.argmax(g.importance()))]
    table = g.importance(per_class=True, named=True)
    assert list(table.index) == ["no", "yes"] and list(table.columns) == names
    np.testing.assert_array_equal(table.to_numpy(), g.importance(per_class=True))


def test_compare_reports_the_change_of_sensitive_shares(german):
    from dlbacktrace.aggregate import compare
    from dlbacktrace.report.results import comparison_report

    test, names, sex, biased, control = german
    opts = {"feature_names": names, "groups": sex, "sensitive": {"sex": ["status_sex"]},
            "batch_size": 200}
    before, after = aggregate(biased, test.x, **opts), aggregate(control, test.x, **opts)
    cmp = compare(before, after, names=("biased", "fixed"))
    rows = {(r["sensitive"], r["group"]): r for r in cmp.shares}
    assert set(rows) == {("sex", "female"), ("sex", "male"), ("sex", ALL_ROWS)}
    sb = before.sensitive_shares().set_index("group")
    sa = after.sensitive_shares().set_index("group")
    overall = rows[("sex", ALL_ROWS)]
    assert overall["share_biased"] == sb.loc[ALL_ROWS, "share"]
    assert overall["change"] == pytest.approx(sa.loc[ALL_ROWS, "share"] - sb.loc[ALL_ROWS, "share"])
    assert overall["stderr"] == pytest.approx(np.hypot(sa.loc[ALL_ROWS, "stderr"],
                                                       sb.loc[ALL_ROWS, "stderr"]))
    (line,) = [x for x in cmp.summary().splitlines() if "on sensitive 'sex'" in x]
    assert "beyond noise" in line and line.startswith("Share of |relevance|")
    assert cmp.to_json()["sensitive_shares"][2]["group"] == ALL_ROWS
    assert "Bias lens: change of the share on sensitive features" in comparison_report(cmp)
    plain = aggregate(control, test.x, feature_names=names, batch_size=200)
    assert compare(plain, after).shares == []  # only one side has the lens: nothing to compare
