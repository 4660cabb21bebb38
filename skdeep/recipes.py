"""Named fine-tuning recipes: tested combinations of :class:`~skdeep.FineTunedCNNClassifier`
parameters, so that a user does not have to know the literature.

``FineTunedCNNClassifier(recipe="lp-ft")`` takes the recipe's value of each parameter the recipe
names *and the user left at its default*: a parameter given explicitly always wins
(``recipe="lp-ft", ema=None`` is the recipe without weight averaging). ``recipe=None`` (the
default) is the parameters alone, which ``benchmarks/bench_transfer.py --recipes`` measured best
on the small sets it has (see the user guide "Images unlike ImageNet" for the table).

The recipes:

``"lp-ft"``
    Linear probing, then fine-tuning (Kumar et al., 2022): the head starts from a linear probe on
    the frozen features (``head_init="probe"``) and the weights are averaged over the steps
    (``ema=0.99``). Measured on three sets of 400-500 images: -0.6, -7.7 and -7.2 points of
    balanced accuracy against the defaults (at 10 epochs LP-FT alone gained 1.1 points on
    Fashion-MNIST and lost 7.1 on MNIST digits). The literature's remedy for a distorted
    network did not help on these sets; whether it helps on yours, ``skdeep evaluate
    --finetune`` measures (:data:`COMPARED_RECIPE`).
``"fast"``
    The epoch-counted schedule (``max_steps=None``: ``epochs`` epochs whatever the size of the
    set), the default of skdeep before the step budget: up to 3 times faster on a few hundred
    images, and 1.7 to 8.7 points of balanced accuracy lower in the same measurements.
"""

from __future__ import annotations

from typing import Any

#: The parameters a recipe may set (read through the recipe wherever the classifier uses them).
RECIPE_PARAMETERS = ("head_init", "max_steps", "ema", "sampler")

#: recipe name -> {parameter: value}.
RECIPES: dict[str, dict[str, Any]] = {
    "lp-ft": {"head_init": "probe", "ema": 0.99},
    "fast": {"max_steps": None},
}

#: The recipe ``evaluate(finetune=True)`` (``skdeep evaluate --finetune``) fits beside the
#: fine-tunings with the defaults: all layers, with LP-FT, whose gain depends on the collection.
COMPARED_RECIPE = "lp-ft"


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
    >>> recipe_params("lp-ft")["head_init"]
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
