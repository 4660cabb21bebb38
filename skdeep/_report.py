"""Turning an :class:`~skdeep.evaluation.EvaluationResult` into words, files and pictures.

The plots use matplotlib's object-oriented API on a bare :class:`matplotlib.figure.Figure`
(rendered by the Agg canvas), never ``pyplot``: no display is needed, no global backend is
switched, and nothing leaks between reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._atomic import atomic_write
from ._defaults import ACTIVATION_MAPS_FILE
from ._strategies import (
    PIXELS,
    finetune_settings,
    finetune_strategy,
    frozen_layers,
    frozen_strategy,
    is_finetune,
    short_label,
    strategy_label,
)
from ._values import json_default
from .calibration import plot_reliability_diagram
from .datasets import mark_output_folder
from .recipes import recipe_params

# An EvaluationResult (skdeep._result). Not imported, not even for type checkers: the result's
# summary() and save() call this module, and the dependency goes one way.
Result = Any

EMBEDDING_MAPS = ("pca", "tsne")
_MAX_LABELLED_CLASSES = 20  # beyond this, plots drop per-class legends and cell values
_MAX_MAP_POINTS = 5000  # the 2-D map shows a random subset of larger data sets


# --- words -------------------------------------------------------------------------------------


def recommended_strategy(scores: pd.DataFrame, best: str) -> str:
    """The cheapest strategy (``seconds`` per fold) whose mean accuracy is within one standard
    deviation of the most accurate one's, ``best``."""
    by_name = scores.set_index("strategy")
    tied = _tied(by_name, best)
    return (str(tied["seconds"].idxmin()) if tied["seconds"].min() < by_name.loc[best, "seconds"]
            else best)


def _tied(by_name: pd.DataFrame, best: str) -> pd.DataFrame:
    """The strategies whose mean accuracy is within one standard deviation of ``best``'s."""
    top = by_name.loc[best]
    return by_name[by_name["accuracy_mean"] >= top["accuracy_mean"] - top["accuracy_std"]]


def recommend(scores: pd.DataFrame, best: str, config: dict) -> str:
    """What to use, given the cross-validated scores, in words and code: the
    :func:`recommended_strategy`."""
    by_name = scores.set_index("strategy")
    top = by_name.loc[best]
    tied = _tied(by_name, best)
    choice = recommended_strategy(scores, best)
    chosen = by_name.loc[choice]
    pixels = by_name.loc[PIXELS]
    layers = by_name[by_name["layer"].notna()]
    best_layer = layers["accuracy_mean"].idxmax() if len(layers) else None
    lines = []
    if choice != best:
        lines.append(
            f"The most accurate is the {short_label(best)} ({_score(top)}, "
            f"{_seconds(top['seconds'])} per fold); the cheapest strategy within one standard "
            f"deviation of it is the {short_label(choice)} ({_score(chosen)}, "
            f"{_seconds(chosen['seconds'])} per fold), so that is the recommendation."
        )
    if choice == PIXELS:
        lines.append(
            f"Raw pixels ({_score(pixels)}) do as well as the best CNN features here"
            + (f" ({best_layer}: {_score(layers.loc[best_layer])})." if best_layer else ".")
            + " The images may be too unlike the photos the network was trained on, or too "
            "small for its input: try a larger --image-size, another --backbone"
            + (", or --finetune." if not config.get("finetune") else ".")
        )
    elif is_finetune(choice):
        frozen = layers.loc[best_layer] if best_layer else None
        ratio = chosen["seconds"] / max(frozen["seconds"], 1e-9) if frozen is not None else None
        lines.append(
            f"Fine-tuning wins: {_score(chosen)} for the {short_label(choice)}"
            + (f" vs {_score(frozen)} for frozen {best_layer} features" if frozen is not None else "")
            + f" and {_score(pixels)} for raw pixels"
            + (f", at {ratio:,.0f}x the cost of the frozen pipeline (forward pass + logistic "
               "regression)." if ratio else ".")
        )
        lines.append("  " + _finetune_code(choice, config))
    else:
        gain = 100 * (chosen["accuracy_mean"] - pixels["accuracy_mean"])
        lines.append(
            f"Use the {short_label(choice)} of {config['backbone']}: {_score(chosen)}, "
            f"{gain:+.1f} points over raw pixels ({_score(pixels)})."
        )
        lines.append("  " + _pipeline_code(choice, int(chosen["image_size"]), config))
        if not config.get("finetune"):
            lines.append("Fine-tuning (--finetune) may do better still, at a much higher cost.")
    lines += _depth_and_size(layers, config)
    others = tied.index[tied.index != best]
    if len(others):
        lines.append(
            f"Within one standard deviation of the best: {', '.join(others)}; differences this "
            f"small are not reliable with {config['n_images']} images."
        )
    return "\n".join(lines)


def _depth_and_size(frozen: pd.DataFrame, config: dict) -> list[str]:
    """Which depth (one layer or a pair) and which input size, when several were compared."""
    width = frozen.index.map(lambda name: len(frozen_layers(name)))
    single, pair = frozen[width == 1], frozen[width == 2]
    lines = []
    if len(pair):
        one, two = single["accuracy_mean"].idxmax(), pair["accuracy_mean"].idxmax()
        lines.append(f"Depth: best single layer {one} ({_score(single.loc[one])}), best pair "
                     f"{two} ({_score(pair.loc[two])}).")
    if len(set(frozen["image_size"])) > 1:
        by_size = frozen.groupby("image_size")["accuracy_mean"].max()
        lines.append("Size: best frozen accuracy " + ", ".join(
            f"{mean:.3f} at {size} px" for size, mean in by_size.items()) + ".")
    return lines


def _score(row: pd.Series) -> str:
    return f"{row['accuracy_mean']:.3f} +- {row['accuracy_std']:.3f}"


def _pipeline_code(strategy: str, image_size: int, config: dict) -> str:
    args = []
    if config["backbone"] != "efficientnet_lite0":
        args.append(f"backbone={config['backbone']!r}")
    layers = frozen_layers(strategy)
    layer = layers[0] if len(layers) == 1 else layers
    args += [f"layer={layer!r}", f"image_size={image_size}"]
    lr = config["logistic_regression"]
    lr_args = ", ".join(f"{k}={v!r}" for k, v in (("C", lr["C"]),) if v != 1.0)
    lr_args = ", ".join(filter(None, [lr_args, f"max_iter={lr['max_iter']}"]))
    return (f"make_pipeline(PretrainedCNNFeatures({', '.join(args)}), StandardScaler(), "
            f"LogisticRegression({lr_args}))")


def _finetune_code(strategy: str, config: dict) -> str:
    train_layers, tta, recipe = finetune_settings(strategy)
    settings = {**config.get("finetune_params", {}), "train_layers": train_layers}
    settings.pop("tta", None)
    if recipe is not None:
        settings["recipe"] = recipe
    if tta:
        settings["tta"] = config["finetune_tta"]
    args = [f"backbone={config['backbone']!r}", f"image_size={config['image_size']}"]
    args += [f"{key}={value!r}" for key, value in sorted(settings.items())]
    return f"FineTunedCNNClassifier({', '.join(args)})"


def format_summary(result: Result) -> str:
    """The results table with a header on the data and the method, then the recommendation."""
    config = result.config
    lines = [
        f"{config['n_images']} images, {config['n_classes']} classes, {config['cv']}-fold "
        f"stratified cross-validation (random_state={config['random_state']})"
        + (", near-duplicates kept in one fold." if config.get("n_duplicate_groups") else "."),
        f"Backbone {config['backbone']} ({config['weights_id']}), input {config['image_size']} px, "
        f"{config['pooling']} pooling, {config['precision']} on {config['device']}.",
        f"CNN features of {len(config['layers'])} layers computed once for all images in "
        f"{config['embedding_seconds']:.1f} s"
        + (f" (one pass at each of {', '.join(map(str, config['image_sizes']))} px)"
           if len(config.get("image_sizes", ())) > 1 else "")
        + ". The network is frozen and does not learn from the images, so sharing the features "
        "across folds leaks nothing."
        + (" A pair such as a+b is the two layers' features concatenated."
           if config.get("pairs") else ""),
    ]
    if config["unreadable_rows"]:
        lines.append(f"{len(config['unreadable_rows'])} unreadable image(s) were left out.")
    lines += _duplicate_lines(config, result.best)
    lines.append("")
    calibrated = "ece_calibrated" in result.scores
    probabilities = "ece" in result.scores  # not in results saved before they were scored
    header = ("strategy", "features", "accuracy (mean +- std)",
              *(("log loss", "ECE") if probabilities else ()),
              *(("log loss (cal.)", "ECE (cal.)") if calibrated else ()),
              "seconds / fold")
    rows = []
    for _, row in result.scores.iterrows():
        marker = " *" if row["strategy"] == result.best else ""
        rows.append((
            short_label(row["strategy"]) + marker,
            "-" if pd.isna(row["n_features"]) else str(int(row["n_features"])),
            f"{row['accuracy_mean']:.3f} +- {row['accuracy_std']:.3f}",
            *((f"{row['log_loss']:.3f}", f"{100 * row['ece']:.1f} %") if probabilities else ()),
            *((f"{row['log_loss_calibrated']:.3f}", f"{100 * row['ece_calibrated']:.1f} %")
              if calibrated else ()),
            _seconds(row["seconds"]) + ("" if row["converged"] else " (!)"),
        ))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(text.ljust(width) if i == 0 else text.rjust(width)
                           for i, (text, width) in enumerate(zip(header, widths))))
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(text.ljust(width) if i == 0 else text.rjust(width)
                               for i, (text, width) in enumerate(zip(row, widths))))
    lines.append("Frozen features and raw pixels: StandardScaler + LogisticRegression; * marks "
                 "the most accurate.")
    if probabilities:
        lines.append("log loss and ECE (expected calibration error, 15 bins) of the out-of-fold "
                     "probabilities: lower is better"
                     + ("; calibrated: by a temperature fitted inside each training fold, which "
                        "keeps every prediction." if calibrated else "."))
    lines.append("seconds / fold: computing the features (the whole forward pass) + fit + "
                 "prediction"
                 + (f"; a + TTA row is the fit of the row above it predicting with "
                    f"tta={config['finetune_tta']!r}, its seconds include that fit"
                    if config.get("finetune_tta") is not None else "")
                 + ".")
    if config.get("finetune_recipe"):  # not in results saved before evaluate compared a recipe
        settings = ", ".join(f"{name}={value!r}" for name, value
                             in recipe_params(config["finetune_recipe"]).items())
        lines.append(f"recipe {config['finetune_recipe']!r}: FineTunedCNNClassifier with "
                     f"{settings} (skdeep.recipes), except where finetune_params set them.")
    if not result.scores["converged"].all():
        lines.append("(!) LogisticRegression reached max_iter on some folds; raise --max-iter "
                     "or lower --C for fully converged fits.")
    lines += ["", result.recommendation]
    return "\n".join(lines)


def _duplicate_lines(config: dict, best: str) -> list[str]:
    """What the near-duplicate search found and what it changed, in one or two lines."""
    if config.get("duplicates") != "group":  # "ignore", or a result saved before the search
        return ["Near-duplicate images were not looked for: a copy of a test image among the "
                "training images would inflate the scores."]
    if not config["n_duplicate_groups"]:
        return ["No near-duplicate images were found, so the folds are plain stratified folds."]
    reasons = config["duplicate_pairs_by_reason"]
    compared = config["duplicates_compared"]
    which = ("best strategy" if compared == best
             else "best frozen strategy (fine-tuning is not refitted on plain folds)")
    found = (f"Near-duplicates: {config['n_duplicate_groups']} group(s) of "
             f"{config['n_images_in_duplicate_groups']} images ({reasons['exact']} exact, "
             f"{reasons['pixels']} pixel and {reasons['embedding']} embedding pairs), each kept "
             "in one fold")
    if not config["n_straddling_pairs"]:
        return [found + "; plain stratified folds split none of them, so they are the folds."]
    return [
        found + f"; {config['n_straddling_pairs']} pair(s) would have straddled plain folds.",
        f"The {which}, {short_label(compared)}: {config['plain_cv_accuracy']:.3f} on plain folds, "
        f"{config['grouped_cv_accuracy']:.3f} on grouped folds (scores here use grouped folds).",
    ]


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"


def to_jsonable(result: Result) -> dict:
    """Config, scores, folds, best and recommendation as plain JSON types."""
    def records(frame: pd.DataFrame) -> list[dict]:
        return json.loads(frame.to_json(orient="records"))

    return {
        "config": json.loads(json.dumps(result.config, default=json_default)),
        "scores": records(result.scores),
        "folds": records(result.folds),
        "best": result.best,
        "recommendation": result.recommendation,
    }


# --- files -------------------------------------------------------------------------------------


def write_report(result: Result, folder: str | os.PathLike, *,
                 embedding_map: str = "pca") -> list[Path]:
    """Write results.csv, folds.csv, results.json, summary.txt, four PNG plots (the reliability
    diagram of the recommended strategy among them) and, when near-duplicates were found,
    duplicates.csv to ``folder``."""
    if embedding_map not in EMBEDDING_MAPS:
        raise ValueError(f"embedding_map must be one of {EMBEDDING_MAPS}; got {embedding_map!r}.")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"the report folder {str(folder)!r} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    mark_output_folder(folder)  # its PNG plots are never read back as images
    written = []

    def keep(path: Path, write) -> None:
        atomic_write({path: write})
        written.append(path)

    keep(folder / "results.csv", lambda p: result.scores.to_csv(p, index=False))
    keep(folder / "folds.csv", lambda p: result.folds.to_csv(p, index=False))
    keep(folder / "results.json",
         lambda p: Path(p).write_text(json.dumps(to_jsonable(result), indent=2) + "\n"))
    keep(folder / "summary.txt", lambda p: Path(p).write_text(format_summary(result) + "\n"))
    duplicates = folder / "duplicates.csv"
    if result.duplicate_pairs is not None and len(result.duplicate_pairs):
        keep(duplicates, lambda p: result.duplicate_pairs.to_csv(p, index=False))
    else:  # one from an earlier report would describe other images
        duplicates.unlink(missing_ok=True)
    keep(folder / "accuracy_by_layer.png", lambda p: _save(plot_accuracy_by_layer(result), p))
    keep(folder / "confusion_matrix.png", lambda p: _save(plot_confusion_matrix(result), p))
    keep(folder / "embedding_map.png",
         lambda p: _save(plot_embedding_map(result, method=embedding_map), p))
    if result.probabilities is not None and result.recommended is not None:
        keep(folder / "reliability_diagram.png", lambda p: _save(plot_reliability(result), p))
    gallery = getattr(result, "gallery", None)
    if gallery is not None:  # evaluate(explain=True); results.json names it in its config
        keep(folder / ACTIVATION_MAPS_FILE, lambda p: _save(gallery, p))
    return written


def _save(figure, path: str) -> None:
    figure.savefig(path, dpi=120, format="png")


# --- pictures ----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report's plots need matplotlib: pip install matplotlib") from exc
    return Figure(figsize=(width, height), layout="constrained")


def plot_accuracy_by_layer(result: Result):
    """Accuracy of each layer's features, shallow to deep, one line per input size, against raw
    pixels, the best pair of layers and fine-tuning."""
    scores = result.scores.set_index("strategy")
    config = result.config
    sizes = config.get("image_sizes", [config["image_size"]])
    # The legend stands right of the axes, never over the lines: with fine-tuning it has a
    # dozen entries, and inside the axes it covered the lines it names.
    figure = _figure(11.5, 4.5)
    ax = figure.add_subplot()
    x = np.arange(len(config["layers"]))
    colors = ("tab:blue", "tab:orange", "tab:purple", "tab:brown")
    for index, size in enumerate(sizes):
        names = [frozen_strategy([layer], None if index == 0 else size)
                 for layer in config["layers"]]
        layers = scores.loc[names]
        ax.errorbar(x, layers["accuracy_mean"], yerr=layers["accuracy_std"], marker="o",
                    capsize=4, linewidth=2, color=colors[index % len(colors)],
                    label=f"{config['backbone']} features at {size} px + logistic regression")
        for i, (mean, std) in enumerate(zip(layers["accuracy_mean"], layers["accuracy_std"])):
            ax.annotate(f"{mean:.3f}", (x[i], mean + std), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=9)
    references = [(PIXELS, "tab:gray", "--")]
    pairs = scores[[len(frozen_layers(name) or ()) == 2 for name in scores.index]]
    if len(pairs):
        references.append((str(pairs["accuracy_mean"].idxmax()), "tab:red", "-."))
    tuned = ("tab:green", "tab:olive", "tab:cyan", "tab:pink")  # one per fit, solid with TTA
    fits = [name for name in scores.index if is_finetune(name) and not finetune_settings(name).tta]
    for name in filter(is_finetune, scores.index):
        train_layers, tta, recipe = finetune_settings(name)
        color = tuned[fits.index(finetune_strategy(train_layers, recipe=recipe)) % len(tuned)]
        references.append((name, color, "-" if tta else ":"))
    span = (-0.5, max(len(x) - 0.5, 0.5))
    for name, color, style in references:
        mean, std = scores.loc[name, "accuracy_mean"], scores.loc[name, "accuracy_std"]
        ax.axhline(mean, color=color, linestyle=style, linewidth=1.5,
                   label=f"{strategy_label(name)} ({mean:.3f})")
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
    low = float((scores["accuracy_mean"] - scores["accuracy_std"]).min())
    high = float((scores["accuracy_mean"] + scores["accuracy_std"]).max())
    bottom, top = max(0.0, low - 0.08), min(1.07, high + 0.07)  # room for the values above 1.0
    chance = 1.0 / config["n_classes"]
    if chance >= bottom:  # only when it is in view: a distant chance line squashes the data
        ax.axhline(chance, color="black", linewidth=0.8, alpha=0.4, label=f"chance ({chance:.2f})")
    ax.set_xlim(*span)
    ax.set_xticks(x, list(config["layers"]))
    ax.set_xlabel("layer (shallow to deep)")
    ax.set_ylabel(f"accuracy ({config['cv']}-fold mean \u00b1 std)")
    ax.set_ylim(bottom, top)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.set_title(f"Which layer transfers best? {config['n_images']} images, "
                 f"{config['n_classes']} classes, {config['image_size']} px input", fontsize=11)
    return figure


def plot_reliability(result: Result):
    """Reliability diagram of the recommended strategy's out-of-fold probabilities, before and
    (with ``calibrate=True``) after calibration."""
    name = result.recommended
    probas = {"as fitted": result.probabilities[name]}
    if result.calibrated_probabilities is not None:
        probas = {"before calibration": result.probabilities[name],
                  "after (temperature, fitted in each training fold)":
                      result.calibrated_probabilities[name]}
    return plot_reliability_diagram(
        result.y, probas, labels=np.unique(result.y),
        title=f"Recommended strategy: {strategy_label(name)}\nout-of-fold probabilities, "
              f"{len(result.y)} images")


def plot_confusion_matrix(result: Result):
    """Out-of-fold confusion matrix (counts, rows = true class) of the best strategy."""
    from sklearn.metrics import confusion_matrix

    classes = result.classes
    predicted = result.predictions[result.best]
    matrix = confusion_matrix(result.y, predicted, labels=classes)
    n = len(classes)
    side = min(max(4.5, 0.45 * n + 2.5), 16)
    figure = _figure(side + 1.0, side)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="images")
    if n <= _MAX_LABELLED_CLASSES:
        threshold = matrix.max() / 2
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > threshold else "black")
    names = [str(c) for c in classes]
    ax.set_xticks(np.arange(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = float(np.mean(predicted == result.y))
    ax.set_title(f"Best strategy: {strategy_label(result.best)}\nout-of-fold predictions, "
                 f"accuracy {accuracy:.3f}", fontsize=10)
    return figure


def plot_embedding_map(result: Result, method: str = "pca"):
    """The features of the best layer in 2-D (PCA, or t-SNE), coloured by class."""
    layer, features = _map_features(result)
    labels = result.y
    if len(labels) > _MAX_MAP_POINTS:  # a readable plot, and t-SNE in seconds
        rows = np.random.default_rng(result.config["random_state"]).choice(
            len(labels), _MAX_MAP_POINTS, replace=False)
        features, labels = features[np.sort(rows)], labels[np.sort(rows)]
    points = embed_2d(features, method, result.config["random_state"])
    classes = result.classes
    figure = _figure(8.0, 6.0)
    ax = figure.add_subplot()
    colormap = _class_colors(len(classes))
    for index, label in enumerate(classes):
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=9, alpha=0.75, color=colormap(index),
                   label=str(label), linewidths=0)
    if len(classes) <= _MAX_LABELLED_CLASSES:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2,
                  frameon=False)
    names = {"pca": ("PC 1", "PC 2", "PCA"), "tsne": ("t-SNE 1", "t-SNE 2", "t-SNE")}[method]
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    shown = f", {len(labels)} of {len(result.y)} images" if len(labels) < len(result.y) else ""
    ax.set_title(f"{names[2]} of the {short_label(layer)} ({features.shape[1]} dimensions, "
                 f"standardised{shown}), coloured by class", fontsize=10)
    return figure


def embed_2d(features: np.ndarray, method: str, random_state: int) -> np.ndarray:
    """Standardise, then PCA to 2-D, or PCA to 50-D followed by t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(features)
    if method == "pca":
        return PCA(n_components=2, random_state=random_state).fit_transform(scaled)
    if method != "tsne":
        raise ValueError(f"method must be one of {EMBEDDING_MAPS}; got {method!r}.")
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, *scaled.shape), random_state=random_state).fit_transform(scaled)
    perplexity = float(min(30.0, max(2.0, (len(scaled) - 1) / 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity,
                random_state=random_state).fit_transform(reduced)


def _map_features(result: Result) -> tuple[str, np.ndarray]:
    """The best strategy's CNN features (a pair's side by side), or the best frozen strategy's
    when pixels or fine-tuning won: (its name, the matrix)."""
    scores = result.scores
    frozen = scores[scores["layer"].notna()]
    best = result.best if frozen_layers(result.best) else str(
        frozen.loc[frozen["accuracy_mean"].idxmax(), "strategy"])
    size = int(frozen.set_index("strategy").loc[best, "image_size"])
    first = size == result.config["image_size"]
    parts = [result.embeddings[frozen_strategy([layer], None if first else size)]
             for layer in frozen_layers(best)]
    return best, parts[0] if len(parts) == 1 else np.hstack(parts)


def _class_colors(n: int):
    from matplotlib import colormaps

    if n <= 10:
        return colormaps["tab10"]
    if n <= 20:
        return colormaps["tab20"]
    return colormaps["turbo"].resampled(n)
