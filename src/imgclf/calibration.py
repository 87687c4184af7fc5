"""Confidence calibration: reliability bins, expected calibration error and temperature scaling.

Temperature scaling divides a model's logits by one number T > 1 (less confident) or < 1 (more
confident), fitted to minimise the negative log-likelihood on the validation split (Guo et al.,
"On Calibration of Modern Neural Networks", ICML 2017). The models here output softmax
probabilities p, and softmax(log p / T) equals softmax(logits / T), so T applies to p directly.
"""

from __future__ import annotations

import numpy as np

N_BINS = 15
_EPSILON = 1e-12


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale softmax probabilities (N, C) by a temperature; T = 1 returns them unchanged."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, _EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))


def reliability(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Confidence-versus-accuracy bins and the expected calibration error (ECE).

    Each prediction falls into one of `n_bins` equal-width bins by its top probability. ECE is
    the mean over bins of |accuracy - mean confidence|, weighted by the share of predictions in
    the bin.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high) if low > 0 else (confidence >= low) & (confidence <= high)
        count = int(inside.sum())
        accuracy = float(correct[inside].mean()) if count else None
        mean_confidence = float(confidence[inside].mean()) if count else None
        if count:
            ece += count / len(labels) * abs(accuracy - mean_confidence)
        bins.append({"low": float(low), "high": float(high), "count": count, "accuracy": accuracy,
                     "confidence": mean_confidence})
    return {"ece": float(ece), "bins": bins}


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T on validation probabilities (N, C) and int labels (N,) by minimising the NLL.

    Returns the temperature with the ECE and NLL before and after it.
    """
    from scipy.optimize import minimize_scalar

    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_temperature))), labels)

    # Search log T in [ln 0.05, ln 20]: wide enough for any model seen in practice.
    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    temperature = float(np.exp(result.x))
    scaled = apply_temperature(probabilities, temperature)
    return {
        "temperature": temperature,
        "fitted_on": "val",
        "n_images": int(len(labels)),
        "ece_before": reliability(probabilities, labels)["ece"],
        "ece_after": reliability(scaled, labels)["ece"],
        "nll_before": negative_log_likelihood(probabilities, labels),
        "nll_after": negative_log_likelihood(scaled, labels),
    }


def coverage_curve(probabilities: np.ndarray, labels: np.ndarray, thresholds=None) -> list[dict]:
    """For each threshold, the share of images answered (top probability at or above it) and the
    accuracy on those; the rest would be answered "unknown"."""
    if thresholds is None:
        thresholds = np.round(np.arange(0.0, 1.0, 0.05), 2)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    rows = []
    for threshold in thresholds:
        answered = confidence >= threshold
        rows.append({
            "threshold": float(threshold),
            "coverage": float(answered.mean()) if len(labels) else 0.0,
            "accuracy": float(correct[answered].mean()) if answered.any() else None,
        })
    return rows
