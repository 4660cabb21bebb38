"""The strategies :func:`~skdeep.evaluation.evaluate` compares: their names and how they read.

A strategy is named by the ``strategy`` column of ``EvaluationResult.scores``:

- :data:`PIXELS`, the raw-pixel baseline;
- frozen CNN features: a layer name (``"blocks.4"``), two layers concatenated
  (``"blocks.4+penultimate"``), either one at an input size other than the first compared
  (``"blocks.4@224"``): see :func:`frozen_strategy`;
- fine-tuning, named by the layers trained and whether it predicts with test-time
  augmentation (``"finetune-head"``, ``"finetune-last2"``, ``"finetune-all-tta"``): see
  :func:`finetune_strategy`.

The evaluation and its report both read these names, so they are made and read here only.
"""

from __future__ import annotations

from collections.abc import Sequence

PIXELS = "pixels"
FINETUNE = "finetune"  # the prefix of every fine-tuning strategy

#: evaluate(finetune=True) fine-tunes the new head only, the last this many units and all...
FINETUNE_LAST_K = 2
#: ...and predicts again with these test-time views (unless finetune_params gives "tta").
FINETUNE_TTA = "flip"

_PAIR = "+"  # joins the layers of a concatenation
_AT = "@"  # marks the input size of a frozen strategy
_TTA = "-tta"  # marks a fine-tuned strategy predicting with test-time augmentation
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


def finetune_strategy(train_layers: str | int, tta: bool = False) -> str:
    """The name of fine-tuning with ``train_layers`` (as the classifier takes it) and ``tta``.

    >>> finetune_strategy("head"), finetune_strategy(2, tta=True)
    ('finetune-head', 'finetune-last2-tta')
    """
    trained = train_layers if isinstance(train_layers, str) else f"{_LAST}{int(train_layers)}"
    return f"{FINETUNE}-{trained}" + (_TTA if tta else "")


def finetune_settings(strategy: str) -> tuple[str | int, bool]:
    """The ``train_layers`` of a fine-tuning strategy and whether it predicts with TTA.

    The inverse of :func:`finetune_strategy`:

    >>> finetune_settings("finetune-last2-tta"), finetune_settings("finetune-head")
    ((2, True), ('head', False))
    """
    tta = strategy.endswith(_TTA)
    trained = strategy[len(FINETUNE) + 1:len(strategy) - len(_TTA) if tta else None]
    return (int(trained[len(_LAST):]) if trained.startswith(_LAST) else trained), tta


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
    """A strategy's name in the summary table: ``"raw pixels"``, ``"blocks.5 features"``."""
    if strategy in _SHORT_LABELS:
        return _SHORT_LABELS[strategy]
    if is_finetune(strategy):
        train_layers, tta = finetune_settings(strategy)
        trained = _TRAINED.get(train_layers) or f"last {train_layers} units"
        return f"fine-tuned network ({trained})" + (" + TTA" if tta else "")
    layers = frozen_layers(strategy)
    size = strategy.partition(_AT)[2]
    return " + ".join(layers) + " features" + (f" at {size} px" if size else "")
