"""Named fine-tuning recipes: tested combinations of :class:`~skdeep.FineTunedCNNClassifier`
parameters, so that a user does not have to know the literature.

``FineTunedCNNClassifier(recipe="small-data")`` takes the recipe's value of each parameter the
recipe names *and the user left at its default*: a parameter given explicitly always wins
(``recipe="small-data", ema=None`` is the recipe without weight averaging). ``recipe=None`` (the
default) is the parameters alone. Each recipe's figures come from ``benchmarks/bench_transfer.py``
and are quoted in the user guide "Images unlike ImageNet".

The recipes:

``"small-data"``
    For a few dozen to a few thousand labelled images, balanced or not: the head starts from a
    linear probe on the frozen features (LP-FT, ``head_init="probe"``), training runs for a
    budget of optimisation steps rather than epochs (``max_steps="auto"``: small sets otherwise
    get a few dozen steps), the weights are averaged (``ema=0.99``) and every class is drawn
    equally often (``sampler="balanced"``).

:data:`RECOMMENDED_RECIPE` names the recipe to try first; ``evaluate(finetune=True)`` (``skdeep
evaluate --finetune``) cross-validates it next to the plain fine-tunings.
"""

from __future__ import annotations

from typing import Any

#: The parameters a recipe may set (read through the recipe wherever the classifier uses them).
RECIPE_PARAMETERS = ("head_init", "max_steps", "ema", "sampler")

#: recipe name -> {parameter: value}.
RECIPES: dict[str, dict[str, Any]] = {
    "small-data": {"head_init": "probe", "max_steps": "auto", "ema": 0.99,
                   "sampler": "balanced"},
}

#: The recipe to try first on a new collection, and the one ``evaluate(finetune=True)`` compares
#: (fine-tuning all layers with it) beside the fine-tunings without a recipe.
RECOMMENDED_RECIPE = "small-data"


def recipe_params(name: str | None) -> dict[str, Any]:
    """The parameter values of recipe ``name`` (``{}`` for None).

    Parameters
    ----------
    name : str or None
        A key of :data:`RECIPES`.

    Returns
    -------
    dict
        A copy: changing it changes no recipe.

    Examples
    --------
    >>> from skdeep.recipes import recipe_params
    >>> recipe_params("small-data")["head_init"]
    'probe'
    >>> recipe_params(None)
    {}
    """
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is not a recipe; choose one of {sorted(RECIPES)} "
                         "or None.")
    return dict(RECIPES[name])
