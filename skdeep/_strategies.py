"""The strategies :func:`~skdeep.evaluation.evaluate` compares: their names and how they read.

A strategy is named by the ``strategy`` column of ``EvaluationResult.scores``: :data:`PIXELS`
(the raw-pixel baseline), a layer name (the frozen features of that layer) or :data:`FINETUNE`.
The evaluation and its report both read these names, so they are defined once, here.
"""

from __future__ import annotations

PIXELS = "pixels"
FINETUNE = "finetune"

_LABELS = {PIXELS: "raw pixels + logistic regression", FINETUNE: "fine-tuned network"}
_SHORT_LABELS = {PIXELS: "raw pixels", FINETUNE: "fine-tuned network"}


def strategy_label(strategy: str) -> str:
    """What a strategy does, in words: ``"blocks.5 features + logistic regression"``."""
    return _LABELS.get(strategy, f"{strategy} features + logistic regression")


def short_label(strategy: str) -> str:
    """A strategy's name in the summary table: ``"raw pixels"``, ``"blocks.5 features"``."""
    return _SHORT_LABELS.get(strategy, f"{strategy} features")
