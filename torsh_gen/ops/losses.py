"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both take class scores shaped (N, C, d1, ..., dk) and integer targets shaped
(N, d1, ..., dk), optional per-class weights, an ``ignore_index`` whose samples count
neither in the loss nor in the mean's denominator, and a reduction (none, sum, mean).
SoftmaxCrossEntropyLoss is the NLL loss of the log-softmax over axis 1, which it can also
return as a second output.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ops.registry import INT, STRING, OpSpec, RunContext, op


def _nll(
    log_prob: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    reduction: str,
    ignore_index: int | None,
) -> np.ndarray:
    """The negative log-likelihood loss of ``log_prob`` (N, C, ...) at ``target`` (N, ...)."""
    target = np.asarray(target).astype(np.int64)
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    safe = np.where(keep, target, 0)
    picked = np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    w = np.ones(target.shape, log_prob.dtype) if weight is None else np.asarray(weight)[safe]
    w = np.where(keep, w, 0).astype(log_prob.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(log_prob.dtype)
    total = np.sum(loss, dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, log_prob.dtype)
    if reduction != "mean":
        raise ValueError(f"unknown reduction '{reduction}'; use none, sum or mean")
    return np.asarray(total / np.sum(w, dtype=np.float64), log_prob.dtype)


@op("NegativeLogLikelihoodLoss", since=12)
class NegativeLogLikelihoodLoss(OpSpec):
    """-input[n, target[n, ...], ...] * weight[target], reduced; ignored targets count 0."""

    attrs = {"reduction": STRING("mean"), "ignore_index": INT()}

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray | None = None,
    ) -> np.ndarray:
        return _nll(x, target, weight, ctx.attrs.reduction, ctx.attrs.ignore_index)


@op("SoftmaxCrossEntropyLoss", since=12)
class SoftmaxCrossEntropyLoss(OpSpec):
    """NLL loss of log_softmax(scores, axis=1); outputs the loss and, optionally, log_prob."""

    attrs = {"reduction": STRING("mean"), "ignore_index": INT()}
    flops_per_element = 6

    def run(
        self,
        ctx: RunContext,
        scores: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        work = scores.astype(np.float64) if scores.dtype.itemsize < 4 else scores
        shifted = work - np.max(work, axis=1, keepdims=True)
        log_prob = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        loss = _nll(log_prob, labels, weights, ctx.attrs.reduction, ctx.attrs.ignore_index)
        return loss.astype(scores.dtype), log_prob.astype(scores.dtype)
