"""YelpChi app: the CARE-GNN graph build (against the reference files) and the causal features (against a
per-review loop reference, and prefix-invariance on the real timeline)."""
from __future__ import annotations

import numpy as np
import pytest

from gnnaccel.apps.yelpchi.data import (RELATIONS, Reviews, build_relations, care_gnn_order, group_pairs,
                                        load_reviews, parse_records)
from gnnaccel.apps.yelpchi.features import FEATURE_NAMES, causal_features, stream_order

from conftest import SHARED_DATA

FRAUD = SHARED_DATA / "fraud"
RECON = FRAUD / "yelpchi_recon" / "YelpChi_recon_graph.npz"
RUR_REF = FRAUD / "yelpchi_recon" / "careGNN_net_rur_reference_edges.npz"
needs_data = pytest.mark.skipif(not (FRAUD / "yelpchi_raw" / "metadata.gz").is_file() or not RECON.is_file()
                                or not RUR_REF.is_file(),
                                reason=f"YelpChi data not found under {FRAUD} (set GNNACCEL_DATA)")


@pytest.fixture(scope="module")
def reviews():
    return load_reviews(FRAUD)


@pytest.fixture(scope="module")
def relations(reviews):
    return build_relations(reviews)


# ------------------------------------------------------------------------------------- graph build
@needs_data
def test_reviews_match_reconstruction(reviews):
    with np.load(RECON, allow_pickle=False) as z:
        assert len(reviews) == z["label"].shape[0] == 45_954
        np.testing.assert_array_equal(reviews.user, z["user_id"])
        np.testing.assert_array_equal(reviews.product, z["prod_id"])
        np.testing.assert_array_equal(reviews.rating, z["rating"])
        np.testing.assert_array_equal(reviews.label, z["label"])
        np.testing.assert_array_equal(reviews.day, np.asarray(z["date"], dtype="datetime64[D]").astype(np.int64))
    assert int(reviews.label.sum()) == 6_677  # 14.5% spam


@needs_data
def test_rur_equals_care_gnn_reference(relations):
    with np.load(RUR_REF, allow_pickle=False) as z:
        ref = z["edges"].astype(np.int64)
        assert int(z["num_nodes"]) == 45_954
    rur = relations["rur"].tocoo()
    ours = np.stack([rur.row, rur.col], 1).astype(np.int64)
    ref = ref[np.lexsort((ref[:, 1], ref[:, 0]))]
    ours = ours[np.lexsort((ours[:, 1], ours[:, 0]))]
    np.testing.assert_array_equal(ours, ref)  # entry for entry: 98,630 directed = 49,315 edges


@needs_data
def test_build_equals_reconstruction(relations):
    assert relations["rsr"].nnz == 2 * 3_402_743
    with np.load(RECON, allow_pickle=False) as z:
        for ours, key in zip(RELATIONS, ("rur", "rsr", "rtr_month")):
            m = relations[ours]
            np.testing.assert_array_equal(m.indptr, z[f"{key}_indptr"])
            np.testing.assert_array_equal(m.indices, z[f"{key}_indices"])
            assert (m != m.T).nnz == 0 and m.diagonal().sum() == 0


def test_group_pairs_matches_brute_force():
    rng = np.random.default_rng()
    for n in (0, 1, 2, 57):
        keys = rng.integers(0, 6, n)
        pairs = group_pairs(keys)
        got = set(map(tuple, pairs.T.tolist()))
        want = {(i, j) for i in range(n) for j in range(n) if i != j and keys[i] == keys[j]}
        assert got == want and pairs.shape[1] == len(want)


def test_care_gnn_order_and_parse():
    lines = ["7 0 5.0 1 2011-06-08", "3 1 1.0 -1 2010-01-01", "", "7 1 4.0 1 2009-02-03", "3 0 2.0 1 2012-12-12"]
    raw = parse_records(lines)
    assert raw["day"][0] == np.datetime64("2011-06-08", "D").astype(np.int64)
    np.testing.assert_array_equal(care_gnn_order(raw["user"]), [0, 2, 1, 3])  # user 7's reviews, then user 3's
    with pytest.raises(ValueError, match="line 2"):
        parse_records(["1 2 3.0 1 2011-01-01", "1 2 3.0"])
    with pytest.raises(ValueError, match="labels"):
        parse_records(["1 2 3.0 0 2011-01-01"])


# ------------------------------------------------------------------------------------- causal features
def _reference_features(rv: Reviews) -> np.ndarray:
    """One review at a time, straight from the definitions (float64)."""
    n = len(rv)
    order = stream_order(rv)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    q = 1.0 / 1024
    dev = np.zeros(n)
    for i in range(n):
        prev = [j for j in range(n) if rv.product[j] == rv.product[i] and rv.day[j] < rv.day[i]]
        dev[i] = rv.rating[i] - (np.mean(rv.rating[prev]) if prev else rv.rating[i])
    out = np.zeros((n, len(FEATURE_NAMES)))
    for i in range(n):
        r, d = rv.rating[i], rv.day[i]
        ext = lambda js: float(np.mean([rv.rating[j] in (1, 5) for j in js])) if js else 0.0  # noqa: E731
        f = {"rating": r, "extreme_rating": float(r in (1, 5))}
        for who, key in (("prod", rv.product), ("user", rv.user)):
            prev = [j for j in range(n) if key[j] == key[i] and rv.day[j] < d]
            same_day = [j for j in range(n) if key[j] == key[i] and rv.day[j] == d and pos[j] <= pos[i]]
            known = [j for j in range(n) if key[j] == key[i] and rv.day[j] <= d]
            ratings = rv.rating[prev]
            mean = float(np.mean(ratings)) if prev else r
            f[f"{who}_log_count_before"] = np.log1p(len(prev))
            f[f"{who}_mean_before"] = mean
            f[f"{who}_rating_std_before"] = float(np.std(ratings)) if prev else 0.0
            f[f"{who}_extreme_share_before"] = ext(prev)
            f[f"{who}_log_days_since_first"] = np.log1p(d - min(rv.day[j] for j in known))
            f[f"{who}_log_same_day_so_far"] = np.log1p(len(same_day))
            f[f"{who}_log_count_last_30d"] = np.log1p(sum(d - 30 <= rv.day[j] < d for j in range(n) if key[j] == key[i]))
            if who == "prod":
                f["deviation"] = r - mean
                f["abs_deviation"] = abs(r - mean)
                f["prod_same_rating_share_before"] = float(np.mean(ratings == r)) if prev else 0.0
                f["prod_log_count_last_7d"] = np.log1p(sum(d - 7 <= rv.day[j] < d for j in range(n)
                                                           if key[j] == key[i]))
            else:
                f["user_mean_abs_deviation_before"] = (float(np.mean(np.round(np.abs(dev[prev]) / q) * q))
                                                       if prev else 0.0)
                f["user_log_days_since_previous"] = np.log1p(d - max(rv.day[prev])) if prev else 0.0
                f["user_first_review"] = float(not prev and len(same_day) == 1)
        out[i] = [f[name] for name in FEATURE_NAMES]
    return out


def _random_reviews(rng, n: int) -> Reviews:
    return Reviews(user=rng.integers(0, max(1, n // 4), n), product=rng.integers(0, 5, n),
                   rating=rng.integers(1, 6, n).astype(np.float64), label=rng.integers(0, 2, n),
                   day=rng.integers(14000, 14090, n))


@pytest.mark.parametrize("n", [0, 1, 2, 120])
def test_causal_features_match_reference(n):
    rv = _random_reviews(np.random.default_rng(), n)
    got = causal_features(rv)
    assert got.shape == (n, len(FEATURE_NAMES)) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_features(rv).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_causal_features_ignore_later_reviews_random():
    rng = np.random.default_rng()
    rv = _random_reviews(rng, 300)
    full = causal_features(rv)
    order = stream_order(rv)
    for cut in rng.integers(1, 300, 5):
        prefix = np.sort(order[:cut])
        np.testing.assert_array_equal(causal_features(rv.subset(prefix)), full[prefix])
        # adding arbitrary later reviews (dated after the prefix's last day) changes nothing either
        later = _random_reviews(rng, 50)
        later.day = later.day + (rv.day.max() - later.day.min()) + 1
        both = Reviews(*(np.concatenate([a[prefix], b]) for a, b in zip(
            (rv.user, rv.product, rv.rating, rv.label, rv.day),
            (later.user, later.product, later.rating, later.label, later.day))))
        np.testing.assert_array_equal(causal_features(both)[:cut], full[prefix])


@needs_data
def test_causal_features_prefix_of_real_timeline(reviews):
    full = causal_features(reviews)
    order = stream_order(reviews)
    rng = np.random.default_rng()
    day = reviews.day[order]
    mid_day = int(np.flatnonzero(day[1:] == day[:-1])[rng.integers(0, 1000)]) + 1  # cuts inside a day
    for cut in (mid_day, int(0.6 * len(reviews)), int(rng.integers(1, len(reviews)))):
        prefix = np.sort(order[:cut])
        np.testing.assert_array_equal(causal_features(reviews.subset(prefix)), full[prefix])
