"""Where k-means misses the true regimes: how many wrong hours fall just after a regime change.

Reads a demo store's ``cluster`` (after ``wxdask demo --seed S --out DIR``),
matches clusters to the archive's true regimes (Hungarian assignment on the
contingency table), and prints: the adjusted Rand index, the
hours assigned to the wrong regime, how many of them lie within ``--window``
hours after a change of the true regime, and the index with those hours left
out. Synthetic storms live up to 30 h, so the images lag the regime label.

Usage::

    python scripts/regime_lag.py --seed 0 --store wxdask-demo/demo.zarr [--window 14]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from wxdask import store, synth
from wxdask.config import StoreConfig
from wxdask.errors import WxdaskError


def hours_since_change(truth: np.ndarray) -> np.ndarray:
    """Hours since the true regime last changed (a large number before the first change)."""
    hour = np.arange(len(truth))
    change = np.r_[False, truth[1:] != truth[:-1]]
    return hour - np.maximum.accumulate(np.where(change, hour, -(10**6)))


def matched(truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each cluster label replaced by the true regime it is matched to (Hungarian, most slots in common)."""
    regimes = np.unique(truth)
    clusters = np.unique(labels)
    table = np.array([[np.sum((truth == r) & (labels == c)) for c in clusters] for r in regimes])
    rows, cols = linear_sum_assignment(-table)
    to_regime = {clusters[c]: regimes[r] for r, c in zip(rows, cols)}
    return np.array([to_regime.get(c, -1) for c in labels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the synthetic archive's seed")
    parser.add_argument("--window", type=int, default=14, help="hours after a regime change counted as lag")
    args = parser.parse_args()
    try:
        ds = store.open_input(StoreConfig(url=args.store), ["cluster"])
    except WxdaskError as exc:
        raise SystemExit(f"regime_lag.py: {exc}") from None
    labels = ds["cluster"].isel(lead_time=0).values
    truth = synth.regime_of(args.seed, ds["time"].values)
    ok = labels >= 0
    pred = np.full(len(labels), -1)
    pred[ok] = matched(truth[ok], labels[ok])
    wrong = ok & (pred != truth)
    lag = hours_since_change(truth) <= args.window
    keep = ok & ~lag
    print(f"seed {args.seed}: adjusted Rand index {adjusted_rand_score(truth[ok], labels[ok]):.3f}; "
          f"{int(wrong.sum())} of {int(ok.sum())} hours in the wrong regime, {int((wrong & lag).sum())} of them "
          f"within {args.window} h after a regime change; without those {int((ok & lag).sum())} hours: "
          f"{adjusted_rand_score(truth[keep], labels[keep]):.3f}")


if __name__ == "__main__":
    main()
