"""Which target texts to ask about: the query strategies against their definitions on small arrays,
and ``textlora label`` writing a spreadsheet of texts to label, before and after a classifier exists."""

import json

import numpy as np
import pandas as pd
import pytest

from textlora.active import choose, entropy_scores, hashed_features, kcenter, margin_scores
from textlora.cli import main
from textlora.errors import UserError

from .conftest import fails

PROBS = np.array(
    [
        [0.50, 0.45, 0.05],  # margin 0.05, the most uncertain by margin
        [0.90, 0.05, 0.05],  # confident
        [0.34, 0.33, 0.33],  # margin 0.01 and the largest entropy
        [0.60, 0.20, 0.20],  # margin 0.40
        [0.40, 0.30, 0.30],  # margin 0.10
    ]
)


def test_margin_and_entropy_are_their_definitions():
    assert np.allclose(margin_scores(PROBS), [0.05, 0.85, 0.01, 0.40, 0.10])
    assert np.allclose(entropy_scores(PROBS), [-(p * np.log(p)).sum() for p in PROBS])
    assert choose("margin", 3, 5, probs=PROBS) == [2, 0, 4]
    assert choose("entropy", 2, 5, probs=PROBS) == [2, 4]
    assert choose("margin", 3, 5, labelled=[2], probs=PROBS) == [0, 4, 3]  # never one already labelled


def _min_dist(x, point, others):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return min(1.0 - x[point] @ x[o] for o in others)


def test_kcenter_picks_the_point_farthest_from_everything_chosen_so_far():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    labelled = [3, 17]
    picks = kcenter(x, np.setdiff1d(np.arange(40), labelled), np.array(labelled), 6)
    assert len(set(picks)) == 6 and not set(picks) & set(labelled)
    for j, p in enumerate(picks):  # each pick maximises the distance to its nearest labelled-or-chosen point
        centres = labelled + picks[:j]
        free = [i for i in range(40) if i not in centres]
        assert _min_dist(x, p, centres) == pytest.approx(max(_min_dist(x, i, centres) for i in free))
    # nothing labelled: the first is the point nearest the mean direction, then farthest-first
    first = kcenter(x, np.arange(40), np.array([], dtype=int), 1)[0]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert first == int(np.argmax(xn @ xn.mean(axis=0)))


def test_kcenter_spreads_over_clusters_and_combined_keeps_to_uncertain_texts():
    rng = np.random.default_rng(1)
    centres = np.eye(4) * 10
    x = np.concatenate([c + rng.normal(scale=0.3, size=(10, 4)) for c in centres])
    picks = choose("kcenter", 4, 40, embeddings=x)
    assert sorted(p // 10 for p in picks) == [0, 1, 2, 3]  # one a cluster
    probs = np.tile([0.95, 0.05], (40, 1))
    probs[[5, 6, 25, 26]] = [0.52, 0.48]  # the uncertain texts: two in cluster 0, two in cluster 2
    picks = choose("combined", 2, 40, probs=probs, embeddings=x, pool_factor=2)
    assert set(picks) <= {5, 6, 25, 26} and sorted(p // 10 for p in picks) == [0, 2]


def test_random_is_seeded_and_strategies_say_what_they_need():
    assert choose("random", 5, 30, seed=3) == choose("random", 5, 30, seed=3) != choose("random", 5, 30, seed=4)
    assert len(choose("random", 50, 30, labelled=[1, 2])) == 28  # at most what is left
    with pytest.raises(UserError, match="needs a classifier's probabilities"):
        choose("margin", 2, 5)
    with pytest.raises(UserError, match="expected one of"):
        choose("bald", 2, 5)
    x = hashed_features(["the cat sat", "the cat sat", "stock prices fell sharply"])
    assert x.shape[0] == 3 and np.allclose(np.linalg.norm(x, axis=1), 1) and np.allclose(x[0], x[1])


def test_label_writes_texts_to_label_before_and_after_a_classifier(trained, tmp_path, capsys):
    data = trained / "unlabelled.csv"
    pool = pd.read_csv(data)
    first = tmp_path / "round1.csv"
    assert main(["label", "--data", str(data), "--select", "5", "--output", str(first)]) == 0  # no model yet: kcenter on words
    table = pd.read_csv(first, keep_default_na=False)
    assert list(table.columns) == ["id", "text", "label"] and len(table) == 5 and set(table["label"]) == {""}
    assert set(table["id"]) <= set(pool["id"]) and json.loads(first.with_suffix(".select.json").read_text())["strategy"] == "kcenter"
    # a person fills in four labels and skips one; the next round never asks about them again
    from textlora.run import open_run

    names = open_run(trained / "run").labels
    table.loc[:3, "label"] = [names[0], names[1], names[2], names[0]]
    table.to_csv(first, index=False)
    second = tmp_path / "round2.csv"
    argv = ["label", "--data", str(data), "--select", "6", "--output", str(second), "--model", str(trained / "run"), "--labels", str(first)]
    assert main(argv) == 0
    again = pd.read_csv(second)
    assert len(again) == 6 and not set(again["id"]) & set(table["id"])
    info = json.loads(second.with_suffix(".select.json").read_text())
    assert info["strategy"] == "kcenter" and info["already_labelled"] == 5 and len(info["margin"]) == 6
    capsys.readouterr()
    # bad input: one line naming the file and row
    bad = tmp_path / "bad.csv"
    table.assign(id=[*table["id"][:2], 999999, *table["id"][3:]]).to_csv(bad, index=False)
    fails(capsys, [*argv[:-1], str(bad), "--overwrite"], f"{bad}: row 4: id '999999' is not in {data}")
    table.assign(label=["nonsense", *table["label"][1:]]).to_csv(bad, index=False)
    fails(capsys, [*argv[:-1], str(bad), "--overwrite"], f"{bad}: row 2: label 'nonsense' is not a class")
    fails(capsys, ["label", "--data", str(data), "--select", "2", "--output", str(tmp_path / "x.csv"), "--strategy", "margin"], "needs --model RUN")
