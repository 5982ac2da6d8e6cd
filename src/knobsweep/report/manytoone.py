"""Dunnett's many-to-one procedure (Dunnett 1955): several arms against one shared control, with
the family-wise error controlled.

The statistics T_i = (mean_i - mean_0) / (s sqrt(1/n_i + 1/n_0)) share the control's mean and the
variance estimate s^2 (nu degrees of freedom), so they are multivariate t with correlations
rho_ij = lambda_i lambda_j, lambda_i = sqrt(n_i / (n_i + n_0)). That one-factor structure reduces
every probability the procedure needs to a two-dimensional integral (Dunnett 1955, section 3):
over the control's standard normal deviate z (Gauss-Hermite nodes) and over S = s / sigma, the
square root of a chi-square over nu (the trapezoid rule in log S):

    P(|T_i| <= c for all i) = E_S E_z prod_i [Phi((c S + lambda_i z) / sqrt(1 - lambda_i^2))
                                                - Phi((-c S + lambda_i z) / sqrt(1 - lambda_i^2))]

scipy.stats.dunnett computes the same probabilities by randomised quasi-Monte Carlo over the
multivariate t, 0.2-0.6 s a call with ten arms and its confidence interval; this is deterministic
and takes a millisecond or two (arms of equal size share one factor), which the calibration bench's
hundreds of thousands of simulated sweeps need. tests/test_stats_family.py holds the two equal.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import ndtr, roots_hermitenorm

TWO_SIDED, LESS, GREATER = "two-sided", "less", "greater"
ALTERNATIVES = (TWO_SIDED, LESS, GREATER)
NODES = 64  # Gauss-Hermite nodes over the control's deviate


@functools.cache
def _normal_nodes() -> tuple[np.ndarray, np.ndarray]:
    z, weights = roots_hermitenorm(NODES)
    return z, weights / weights.sum()


@functools.cache
def _scale_nodes(df: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of S = sqrt(chi2_df / df); S = 1 for a known variance (df = inf).

    The trapezoid rule in w = log S: the density of w, C exp(df w - df e^(2w) / 2), is smooth and
    decays fast on both sides, where the rule converges exponentially (Gauss-Laguerre in chi2 does
    not: the integrand has sqrt(chi2) in it, and its weights overflow above ~170 d.f.). The step
    shrinks with the density's width, 1 / sqrt(2 df)."""
    if math.isinf(df):
        return np.ones(1), np.ones(1)
    step = min(0.25, 0.45 / math.sqrt(df))
    w = np.arange(-40 / df - 2, 3 + step, step)
    log_density = df * w - df * np.exp(2 * w) / 2
    weights = np.exp(log_density - log_density.max())
    keep = weights > 1e-13 * weights.sum()
    return np.exp(w[keep]), weights[keep] / weights[keep].sum()


def within_probability(c: np.ndarray, lambdas: tuple[float, ...], df: float, alternative: str) -> np.ndarray:
    """P(every T_i lies within c) for each bound in `c`: |T_i| <= c (two-sided) or T_i <= c (one
    side; by symmetry `less` and `greater` are the same probability)."""
    bounds = np.atleast_1d(np.asarray(c, dtype=float))[:, None, None, None]  # bound x S x z x arm
    z, z_weights = _normal_nodes()
    scale, scale_weights = _scale_nodes(float(df))
    # Arms of equal size share lambda, so their factors are equal: one power per distinct lambda.
    distinct, counts = np.unique(np.asarray(lambdas, dtype=float), return_counts=True)
    spread = np.sqrt(1 - distinct**2)
    shift = (distinct * z[:, None])[None, None]  # 1 x 1 x z x distinct lambda
    reach = bounds * scale[None, :, None, None]
    inside = ndtr((reach + shift) / spread)
    if alternative == TWO_SIDED:
        inside = inside - ndtr((-reach + shift) / spread)
    per_node = np.prod(inside**counts, axis=3)  # bound x S x z
    return np.einsum("bsz,s,z->b", per_node, scale_weights, z_weights)


def lambdas_of(arm_sizes: tuple[int, ...], control_size: int) -> tuple[float, ...]:
    return tuple(math.sqrt(n / (n + control_size)) for n in arm_sizes)


@functools.lru_cache(maxsize=256)
def critical_value(lambdas: tuple[float, ...], df: float, alpha: float, alternative: str) -> float:
    """c with P(every T_i within c) = 1 - alpha: simultaneous intervals are delta_i +- c SE_i.

    The probability rises with c: c is bracketed, then found by regula falsi with the Illinois
    step (about ten evaluations; scipy.optimize's root finders would cost more to import, ~0.5 s in
    every `knobsweep plan`, than the search itself)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")

    def excess(c: float) -> float:
        return float(within_probability(np.array([c]), lambdas, df, alternative)[0]) - (1 - alpha)

    low, high = 0.0, 10.0
    f_low, f_high = excess(low), excess(high)
    while f_high < 0:  # one degree of freedom and many arms need a wide bracket
        low, f_low, high = high, f_high, high * 4
        f_high = excess(high)
    side = 0
    for _ in range(100):
        c = high - f_high * (high - low) / (f_high - f_low)
        f_c = excess(c)
        if abs(f_c) < 1e-12 or high - low < 1e-10:
            break
        if f_c < 0:  # the root is above c
            low, f_low = c, f_c
            f_high = f_high / 2 if side == -1 else f_high  # Illinois: halve the end kept twice in a row
            side = -1
        else:
            high, f_high = c, f_c
            f_low = f_low / 2 if side == 1 else f_low
            side = 1
    return c


def adjusted_p_values(statistics: np.ndarray, lambdas: tuple[float, ...], df: float, alternative: str) -> np.ndarray:
    """Each arm's family-wise adjusted p-value: P(the largest T over the family reaches T_i) under
    the null, for the side(s) tested."""
    t = np.asarray(statistics, dtype=float)
    if alternative == TWO_SIDED:
        bounds = np.abs(t)
    else:
        bounds = t if alternative == GREATER else -t
    return np.clip(1 - within_probability(bounds, lambdas, df, alternative), 0.0, 1.0)


def t_quantile(probability: float, df: float) -> float:
    """Student's t quantile (the normal's for df = inf), without scipy.stats' import cost."""
    from scipy.special import ndtri, stdtrit

    return float(ndtri(probability)) if math.isinf(df) else float(stdtrit(df, probability))


__all__ = [
    "ALTERNATIVES",
    "GREATER",
    "LESS",
    "TWO_SIDED",
    "adjusted_p_values",
    "critical_value",
    "lambdas_of",
    "t_quantile",
    "within_probability",
]
