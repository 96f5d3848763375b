"""Proper scores of probabilistic forecasts: CRPS (from samples and from quantiles), weighted quantile loss,
coverage and width, against closed forms and data drawn from a known distribution; and seasonal naive's interval
from its in-sample errors, the baseline they are reported beside."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from pipeline.evaluation.metrics import crps_from_samples, quantile_metrics, residual_quantiles


def crps_normal(y: float, mu: float, sigma: float) -> float:
    """Closed form of a normal's CRPS (Gneiting & Raftery, 2007)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def test_crps_from_samples_is_exact_on_a_small_case_and_the_absolute_error_for_one_sample():
    # Samples 1 and 3 around 2: E|X - y| = 1, E|X - X'| = (0 + 2 + 2 + 0) / 4 = 1, so CRPS = 1 - 1/2.
    assert crps_from_samples(np.array(2.0), np.array([3.0, 1.0])) == pytest.approx(0.5)
    assert crps_from_samples(np.array([4.0]), np.array([[1.5]]))[0] == pytest.approx(2.5)


@pytest.mark.parametrize("y", [0.0, 0.7, -2.5])
def test_crps_from_samples_and_from_quantiles_approach_the_normal_closed_form(y):
    mu, sigma, n = 1.0, 2.0, 20_000
    levels = (np.arange(n) + 0.5) / n  # evenly through (0, 1): the exact quantiles of N(mu, sigma^2)
    exact = crps_normal(y, mu, sigma)
    samples = norm.ppf(levels, mu, sigma)
    assert crps_from_samples(np.array(y), samples) == pytest.approx(exact, rel=1e-3)
    dense = quantile_metrics(np.array([y]), samples[None], list(levels))
    assert dense["crps"] == pytest.approx(exact, rel=1e-3)


def test_coverage_and_width_of_the_true_quantiles_on_data_drawn_from_them():
    rng = np.random.default_rng(0)
    actual = rng.normal(5.0, 3.0, size=(2000, 24))
    levels = [0.025, 0.1, 0.5, 0.9, 0.975]
    quantiles = np.broadcast_to(norm.ppf(levels, 5.0, 3.0), actual.shape + (5,))
    metrics = quantile_metrics(actual, quantiles, levels)
    assert metrics["coverage_95"] == pytest.approx(0.95, abs=0.005)
    assert metrics["coverage_80"] == pytest.approx(0.80, abs=0.01)
    assert metrics["width_80"] == pytest.approx(2 * 3.0 * norm.ppf(0.9))
    # A wrong distribution (too narrow) covers too little and scores a worse CRPS.
    narrow = np.broadcast_to(norm.ppf(levels, 5.0, 1.0), actual.shape + (5,))
    worse = quantile_metrics(actual, narrow, levels)
    assert worse["coverage_80"] < 0.4 and worse["crps"] > metrics["crps"] and worse["wql"] > metrics["wql"]


def test_points_not_scored_count_in_no_probabilistic_score():
    actual = np.array([[1.0, 2.0, 1e6]])  # the last actual was filled, and wildly so
    quantiles = np.array([[[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]]])
    levels = [0.1, 0.5, 0.9]
    scored = np.array([[True, True, False]])
    masked = quantile_metrics(actual, quantiles, levels, scored)
    assert masked == pytest.approx(quantile_metrics(actual[:, :2], quantiles[:, :2], levels))
    # Pinball terms 0.1, 0, 0.1 at both scored steps: CRPS 2 * 0.4 / 6, far from what 1e6 would make it.
    assert masked["coverage_80"] == 1.0 and masked["crps"] == pytest.approx(0.8 / 6)


def test_seasonal_naive_residual_quantiles_take_each_steps_own_lag_and_only_observed_pairs():
    history = np.arange(10.0)  # every lag-k difference is k
    assert np.array_equal(residual_quantiles(history, season=1, horizon=3, levels=[0.1, 0.9]),
                          [[1, 1], [2, 2], [3, 3]])
    # Season 2, horizon 3: steps 1-2 repeat one season back (errors 2), step 3 two seasons back (errors 4).
    assert np.array_equal(residual_quantiles(history, 2, 3, [0.5]), [[2], [2], [4]])
    history[4] = 1e6  # a filled value: its pairs are left out
    observed = np.ones(10, bool)
    observed[4] = False
    assert np.array_equal(residual_quantiles(history, 1, 1, [0.1, 0.9], observed), [[1, 1]])
