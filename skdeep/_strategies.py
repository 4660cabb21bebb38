"""The strategies :func:`~skdeep.evaluation.evaluate` compares: their names and how they read.

A strategy is named by the ``strategy`` column of ``EvaluationResult.scores``:

- :data:`PIXELS`, the raw-pixel baseline;
- frozen CNN features: a layer name (``"blocks.4"``), two layers concatenated
  (``"blocks.4+penultimate"``), either one at an input size other than the first compared
  (``"blocks.4@224"``): see :func:`frozen_strategy`;
- fine-tuning, named by the layers trained, the recipe added to the user's parameters (if any)
  and whether it predicts with test-time augmentation (``"finetune-head"``,
  ``"finetune-last2"``, ``"finetune-all-tta"``, ``"finetune-all-lp-ft-tta"``): see
  :func:`finetune_strategy`.

The evaluation and its report both read these names, so they are made and read here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

PIXELS = "pixels"
FINETUNE = "finetune"  # the prefix of every fine-tuning strategy

#: evaluate(finetune=True) fine-tunes the new head only, the last this many units and all...
FINETUNE_LAST_K = 2
#: ...and predicts again with these test-time views (unless finetune_params gives "tta").
FINETUNE_TTA = "flip"

_PAIR = "+"  # joins the layers of a concatenation
_AT = "@"  # marks the input size of a frozen strategy
_TTA = "-tta"  # marks a fine-tuned strategy predicting with test-time augmentation
_RECIPE = "-"  # joins the layers trained and the recipe (the layers' token has no "-")
_LAST = "last"  # train_layers=k: the last k units

_LABELS = {PIXELS: "raw pixels + logistic regression"}
_SHORT_LABELS = {PIXELS: "raw pixels"}
_TRAINED = {"head": "head only", "all": "all layers"}


def frozen_strategy(layers: Sequence[str], image_size: int | None = None) -> str:
    """The name of frozen ``layers`` (concatenated) read at ``image_size`` (None: the first size).

    >>> frozen_strategy(["blocks.4", "penultimate"]), frozen_strategy(["blocks.4"], 224)
    ('blocks.4+penultimate', 'blocks.4@224')
    """
    name = _PAIR.join(layers)
    return name if image_size is None else f"{name}{_AT}{int(image_size)}"


def frozen_layers(strategy: str) -> list[str] | None:
    """The layers of a frozen strategy (None for raw pixels and fine-tuning).

    >>> frozen_layers("blocks.4+penultimate@224"), frozen_layers("pixels")
    (['blocks.4', 'penultimate'], None)
    """
    if strategy == PIXELS or is_finetune(strategy):
        return None
    return strategy.split(_AT)[0].split(_PAIR)


class FinetuneSettings(NamedTuple):
    """What a fine-tuning strategy's name says (see :func:`finetune_settings`)."""

    train_layers: str | int  # as FineTunedCNNClassifier takes it
    tta: bool  # whether it predicts with test-time augmentation
    recipe: str | None  # the recipe it adds to the user's parameters (None: none added)


def finetune_strategy(train_layers: str | int, tta: bool = False,
                      recipe: str | None = None) -> str:
    """The name of fine-tuning with ``train_layers`` (as the classifier takes it), ``tta`` and
    ``recipe`` (a :mod:`skdeep.recipes` name evaluate sets on top of the user's parameters).

    >>> finetune_strategy("head"), finetune_strategy(2, tta=True)
    ('finetune-head', 'finetune-last2-tta')
    >>> finetune_strategy("all", tta=True, recipe="lp-ft")
    'finetune-all-lp-ft-tta'
    """
    trained = train_layers if isinstance(train_layers, str) else f"{_LAST}{int(train_layers)}"
    return (f"{FINETUNE}-{trained}" + (f"{_RECIPE}{recipe}" if recipe is not None else "")
            + (_TTA if tta else ""))


def finetune_settings(strategy: str) -> FinetuneSettings:
    """The ``train_layers`` of a fine-tuning strategy, whether it predicts with TTA, and the
    recipe it adds.

    The inverse of :func:`finetune_strategy`:

    >>> finetune_settings("finetune-last2-tta")
    FinetuneSettings(train_layers=2, tta=True, recipe=None)
    >>> finetune_settings("finetune-head")
    FinetuneSettings(train_layers='head', tta=False, recipe=None)
    >>> finetune_settings("finetune-all-lp-ft-tta")
    FinetuneSettings(train_layers='all', tta=True, recipe='lp-ft')
    """
    tta = strategy.endswith(_TTA)
    body = strategy[len(FINETUNE) + 1:len(strategy) - len(_TTA) if tta else None]
    trained, _, recipe = body.partition(_RECIPE)
    train_layers = int(trained[len(_LAST):]) if trained.startswith(_LAST) else trained
    return FinetuneSettings(train_layers, tta, recipe or None)


def is_finetune(strategy: str) -> bool:
    """Whether a strategy fine-tunes the network (and so fits it on each fold)."""
    return strategy.startswith(FINETUNE + "-")


def strategy_label(strategy: str) -> str:
    """What a strategy does, in words: ``"blocks.5 features + logistic regression"``."""
    if strategy in _LABELS:
        return _LABELS[strategy]
    if is_finetune(strategy):
        return short_label(strategy)
    return f"{short_label(strategy)} + logistic regression"


def short_label(strategy: str) -> str:
    """A strategy's name in the summary table: ``"raw pixels"``, ``"blocks.5 features"``.

    >>> short_label("finetune-last2")
    'fine-tuned network (last 2 units)'
    >>> short_label("finetune-all-lp-ft-tta")
    "fine-tuned network (all layers, recipe 'lp-ft') + TTA"
    """
    if strategy in _SHORT_LABELS:
        return _SHORT_LABELS[strategy]
    if is_finetune(strategy):
        train_layers, tta, recipe = finetune_settings(strategy)
        trained = _TRAINED.get(train_layers) or f"last {train_layers} units"
        with_recipe = f", recipe {recipe!r}" if recipe is not None else ""
        return f"fine-tuned network ({trained}{with_recipe})" + (" + TTA" if tta else "")
    layers = frozen_layers(strategy)
    size = strategy.partition(_AT)[2]
    return " + ".join(layers) + " features" + (f" at {size} px" if size else "")
