"""What is wrong with these images? Duplicates, label conflicts, outliers and label errors.

:func:`audit` looks at an image collection (and its labels, when given) once, before any model
is trusted with it, and lists what a person should look at, most certain first:

``exact_duplicate``
    An image whose decoded pixels are identical to an earlier one's (the same file twice, a
    PNG re-saved as BMP). Found by :func:`~skdeep.model_selection.image_signatures`.
``near_duplicate``
    An image that is a near-copy of an earlier one (re-encoded, blurred, brightened, shifted):
    the rule of :func:`~skdeep.model_selection.find_near_duplicates`, on the pixels' thumbnails
    and on the CNN embeddings.
``label_conflict``
    Copies (exact or near) that were given different labels: every member of such a group.
``outlier``
    An image far from all others in the embedding: a scan of the wrong thing, a blank frame,
    noise.
``label_error``
    An image whose given label the other images contradict: confident learning (Northcutt,
    Jiang and Chuang, "Confident learning: estimating uncertainty in dataset labels", JAIR 2021)
    on the out-of-fold probabilities of a linear probe on the embeddings.

Each image is decoded once for its pixel signature and embedded once (with
:class:`~skdeep.PretrainedCNNFeatures` or the transformer given); every detector then works on
those two. The rules, and why:

- **Duplicates.** In a group of near-duplicates (see :mod:`skdeep.model_selection`), the first
  image (lowest row) is the one to keep; each other member is one finding, ``exact_duplicate``
  when an earlier member of its group has the same pixels, else ``near_duplicate``. Its score is
  ``1 - d / cut``: ``d`` the distance to its closest group mate under the rule that paired them
  and ``cut`` that rule's threshold, so 1 for exact copies and 0 at the edge of the rule.
- **Outliers.** Each image's mean cosine distance to its ``k = min(10, n - 1)`` nearest
  neighbours in the embedding (the search the near-duplicate rule made:
  :func:`~skdeep.model_selection.nearest_neighbours`), ``s``. The distribution of ``s`` has a
  long right tail, so it is judged on ``log(s)``: an image is an outlier when its robust z-score,
  ``(log s - median) / (1.4826 * MAD)``, exceeds :data:`OUTLIER_Z` (the median and the median
  absolute deviation are those of ``log s`` over all images, so a few outliers do not move the
  cut), and ``s`` is at least :data:`OUTLIER_MIN_RATIO` times the median (in a set of very
  similar images the MAD is tiny, and the z-score alone would flag a merely unusual member).
  Score ``1 - OUTLIER_Z / z``: 0 at the cut, 0.5 at twice it. At least
  :data:`MIN_IMAGES_FOR_OUTLIERS` readable images are needed.
- **Label errors.** Out-of-fold predicted probabilities ``p`` of ``StandardScaler`` +
  ``LogisticRegression`` on the embeddings (strongly regularised, :data:`PROBE_C` for 1,280
  features: an overconfident probe's mistakes look like label errors), the folds drawn by
  :class:`~sklearn.model_selection.StratifiedGroupKFold` on the near-duplicate groups, so that
  no copy of an image helps predict it. Then, as confident learning does: the threshold of
  class ``j`` is ``t_j``, the mean of ``p_j`` over the images labelled ``j``; an image
  labelled ``i`` is a candidate when ``p_i < t_i`` and some other class ``j`` has
  ``p_j >= t_j``. A candidate is a label error when at most :data:`LABEL_NEIGHBOUR_SHARE` of
  its nearest neighbours in the embedding carry its label: a flipped label disagrees with its
  whole neighbourhood, an ambiguous image only with part of it. Its ``suggested_label`` is
  the most probable class above its threshold and its score the margin
  ``p_suggested - p_given``, clipped to [0, 1]. Classes that look alike still produce some
  findings that are ambiguity, not error: read the list from the top.

The findings are sorted by issue type in the order above, then by score (most certain first),
then by row.
"""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._atomic import atomic_write
from ._inputs import as_items, check_labels, load_item, preview
from ._values import json_default, plain
from ._version import __version__
from .datasets import mark_output_folder
from .model_selection import (
    ImageSignatures,
    Neighbours,
    embed_images,
    find_near_duplicates,
    is_embedding_matrix,
)

__all__ = ["ISSUE_TYPES", "MIN_IMAGES_FOR_OUTLIERS", "OUTLIER_MIN_RATIO", "OUTLIER_Z",
           "AuditReport", "audit"]

#: The kinds of finding, in the order the issues table lists them.
ISSUE_TYPES = ("exact_duplicate", "near_duplicate", "label_conflict", "outlier", "label_error")
#: The outlier cut: a robust z-score of the log mean distance to the nearest neighbours.
OUTLIER_Z = 3.5
#: ...and its mean distance to the nearest neighbours must be at least this many times the
#: median image's: in a set of very similar images the MAD is tiny, and a merely unusual
#: member would pass the z-score alone.
OUTLIER_MIN_RATIO = 2.0
#: Fewer readable images than this: no outlier is flagged (the median and MAD mean little).
MIN_IMAGES_FOR_OUTLIERS = 8
#: Inverse regularisation of the label-error probe, for 1,280 features; scaled by 1,280 / the
#: number of features (the L2 penalty on standardised features grows with their number), at
#: most 1. Measured on penultimate features (1,280) at 96 px with 3 % planted flips (1,797
#: digits; 1,000 Fashion-MNIST images): C=1 flags 82 / 145 images (precision 0.56 / 0.17),
#: C=0.01 flags 49 / 99 (0.73 / 0.21) at a small cost in recall: an overconfident probe's
#: mistakes look like label errors.
PROBE_C = 0.01
_PROBE_FEATURES = 1280
#: A label error also needs at most this share of its nearest neighbours to carry its label.
#: With it, the same measurement gives precision 0.89 / 0.35 at recall 0.62 / 0.60: a flipped
#: label disagrees with its whole neighbourhood, a merely ambiguous image (a shirt that looks
#: like a T-shirt) with only part of it.
LABEL_NEIGHBOUR_SHARE = 0.1

_COLUMNS = ["row", "path", "issue", "score", "group", "duplicate_of", "given_label",
            "suggested_label"]
_GROUPED = ("exact_duplicate", "near_duplicate", "label_conflict")  # findings about groups
_GALLERY_ROWS = 24  # findings (or groups) per gallery PNG
_GALLERY_COLUMNS = 6  # images per gallery row
_TYPICAL = 3  # typical images of the suggested class beside a label error
_THUMBNAIL = 160  # longest side of a gallery thumbnail, pixels


# --- the report --------------------------------------------------------------------------------


class AuditReport:
    """What :func:`audit` found: a table of findings, counts, and the evidence behind them.

    Attributes
    ----------
    issues : pandas.DataFrame
        One row per finding: ``row`` (position in X), ``path`` (the image's path, None for an
        in-memory image), ``issue`` (one of :data:`ISSUE_TYPES`), ``score`` (in [0, 1], higher
        is more certain), ``group`` (the near-duplicate group, for duplicates and label
        conflicts), ``duplicate_of`` (for duplicates, the earlier image it copies: the first
        one with the same pixels for an exact duplicate, else the group's first image, the
        one to keep), ``given_label`` and ``suggested_label`` (for label errors; for label
        conflicts the group's most common label, when there is one). Sorted by issue type in
        the order of :data:`ISSUE_TYPES`, then by score, most certain first.
    summary : dict
        ``{issue type: number of findings}`` for all five types (zeros included), then
        ``n_images``, ``n_unreadable`` and ``n_groups`` (near-duplicate groups of more than
        one image).
    groups_ : ndarray of shape (n_images,)
        Near-duplicate group of each row, ``0 .. n - 1`` by first appearance; -1 for an
        unreadable image.
    pairs_ : pandas.DataFrame
        The near-duplicate pairs (see :class:`~skdeep.model_selection.NearDuplicates`), with
        ``first`` and ``second`` as rows of X.
    probabilities_ : ndarray of shape (n_images, n_classes) or None
        Out-of-fold predicted probabilities of each class (NaN rows for unreadable images);
        None without labels, or when all images are copies of one another (see ``notes_``).
    classes_ : ndarray or None
        The classes, in the columns' order of ``probabilities_``; None without labels.
    outlier_scores_ : ndarray of shape (n_images,)
        Each row's robust z-score of the outlier statistic (NaN where not computed: an
        unreadable image, fewer than :data:`MIN_IMAGES_FOR_OUTLIERS` images).
    unreadable_ : pandas.DataFrame
        The rows left out of every detector because their image could not be read
        (``on_error="nan"``): ``row`` and ``path``.
    thresholds_ : dict
        The cuts used: ``pixels`` and ``embedding`` (near-duplicates), ``outlier_z``, and
        ``outlier_min_ratio``, and ``label`` (``{class: t_j}`` of confident learning, None
        without labels).
    notes_ : list of str
        What the audit had to adapt (fewer folds than asked...), in words.
    provenance_ : dict or None
        The embedding transformer's ``provenance_`` (None when X was an embedding matrix).
    """

    def __init__(self, *, issues: pd.DataFrame, summary: dict, groups: np.ndarray,
                 pairs: pd.DataFrame, probabilities: np.ndarray | None,
                 classes: np.ndarray | None, outlier_scores: np.ndarray | None,
                 unreadable: pd.DataFrame, thresholds: dict, notes: list[str],
                 provenance: dict | None, items: Any = None, labels: np.ndarray | None = None,
                 neighbours: np.ndarray | None = None) -> None:
        self.issues = issues
        self.summary = summary
        self.groups_ = groups
        self.pairs_ = pairs
        self.probabilities_ = probabilities
        self.classes_ = classes
        self.outlier_scores_ = outlier_scores
        self.unreadable_ = unreadable
        self.thresholds_ = thresholds
        self.notes_ = notes
        self.provenance_ = provenance
        self._items = items  # the images, for the galleries (None for an embedding matrix)
        self._labels = labels
        self._neighbours = neighbours  # each row's nearest neighbours (rows of X), or None

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={self.summary[name]}" for name in ISSUE_TYPES)
        return f"AuditReport(n_images={self.summary['n_images']}, {counts})"

    def describe(self, top: int = 10) -> str:
        """The counts per issue type and the ``top`` most certain findings, as text.

        Parameters
        ----------
        top : int, default=10
            Findings listed (the first ``top`` rows of ``issues``).

        Returns
        -------
        str
        """
        summary = self.summary
        lines = [f"{summary['n_images']} images"
                 + (f", {summary['n_unreadable']} unreadable (left out)"
                    if summary["n_unreadable"] else "")
                 + f", {summary['n_groups']} group(s) of near-duplicates.", ""]
        width = max(map(len, ISSUE_TYPES))
        lines.append(f"{'issue'.ljust(width)}  count")
        lines.append(f"{'-' * width}  -----")
        lines += [f"{name.ljust(width)}  {summary[name]:>5}" for name in ISSUE_TYPES]
        if self._labels is None:
            lines.append("(no labels given: label conflicts and label errors were not checked)")
        lines += [f"note: {note}" for note in self.notes_]
        if len(self.issues) and top > 0:
            lines += ["", f"Top findings (of {len(self.issues)}):"]
            shown = self.issues.head(top)
            for _, finding in shown.iterrows():
                lines.append("  " + _finding_line(finding))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> list[Path]:
        """Write the galleries, ``issues.csv`` and ``summary.json`` into the folder ``path``.

        One PNG per issue type that has findings, ``<issue>.png``: rows of thumbnails, most
        certain first, at most 24 rows. Duplicates and label conflicts are shown as their group
        (the image to keep first); an outlier beside its nearest neighbours; a label error with
        its given and suggested labels beside typical images of the suggested class. When X was
        an embedding matrix there are no images to show: only the two files are written.
        A gallery of an earlier audit in the folder, of an issue type not found now, is
        removed.

        Parameters
        ----------
        path : str or os.PathLike
            The folder; made if missing. Files of the same names are replaced.

        Returns
        -------
        list of pathlib.Path
            The files written.
        """
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"the audit folder {str(folder)!r} is a file")
        folder.mkdir(parents=True, exist_ok=True)
        mark_output_folder(folder)  # its galleries are never read back as images
        written: list[Path] = []

        def keep(target: Path, write) -> None:
            atomic_write({target: write})
            written.append(target)

        keep(folder / "issues.csv", lambda p: self.issues.to_csv(p, index=False))
        keep(folder / "summary.json",
             lambda p: Path(p).write_text(json.dumps(self.to_jsonable(), indent=2) + "\n",
                                          encoding="utf-8"))
        for issue in ISSUE_TYPES:
            found = self.issues[self.issues["issue"] == issue]
            gallery = folder / f"{issue}.png"
            if len(found) and self._items is not None:
                keep(gallery,
                     lambda p, issue=issue, found=found: _save(self._gallery(issue, found), p))
            elif gallery.is_file():  # an earlier audit's: it would show what is not found now
                gallery.unlink()
        return written

    def to_jsonable(self) -> dict:
        """The summary, cuts, notes, unreadable rows and provenance, in JSON types."""
        record = {
            "skdeep": __version__,
            "summary": self.summary,
            "thresholds": self.thresholds_,
            "notes": self.notes_,
            "classes": None if self.classes_ is None else list(self.classes_),
            "unreadable": self.unreadable_.to_dict(orient="records"),
            "provenance": self.provenance_,
        }
        return json.loads(json.dumps(record, default=json_default))

    # --- galleries ---------------------------------------------------------------------------

    def _gallery(self, issue: str, found: pd.DataFrame):
        if issue in _GROUPED:
            rows = self._group_rows(issue, found)
        elif issue == "outlier":
            rows = self._outlier_rows(found.head(_GALLERY_ROWS))
        else:
            rows = self._label_error_rows(found.head(_GALLERY_ROWS))
        total = found["group"].nunique() if issue in _GROUPED else len(found)
        title = {
            "exact_duplicate": "Exact duplicates: identical pixels (first image: the one to keep)",
            "near_duplicate": "Near-duplicates (first image: the one to keep)",
            "label_conflict": "Label conflicts: copies given different labels",
            "outlier": "Outliers (first image), beside their nearest neighbours",
            "label_error": "Likely label errors (first image), beside typical images of the "
                           "suggested class",
        }[issue]
        if total > len(rows):
            title += f"\n(the {len(rows)} most certain of {total}; all are in issues.csv)"
        return _grid(rows, title)

    def _label(self, row: int) -> str | None:
        return None if self._labels is None else str(plain(self._labels[row]))

    def _caption(self, row: int, *extra: str) -> str:
        label = self._label(row)
        return "\n".join([f"row {row}", *([f"label: {label}"] if label is not None else []),
                          *extra])

    def _group_rows(self, issue: str, found: pd.DataFrame) -> list[list[tuple[Any, str, str]]]:
        """One gallery row per group: the image to keep, then the group's findings."""
        rows = []
        for group, members in found.groupby("group", sort=False):
            if len(rows) == _GALLERY_ROWS:
                break
            everyone = np.flatnonzero(self.groups_ == group)
            if issue == "label_conflict":
                shown = list(everyone)
                color = {row: "black" for row in shown}
                captions = {row: self._caption(row) for row in shown}
            else:
                first = int(everyone[0])
                shown = [first, *members["row"].astype(int)]
                captions = {first: self._caption(first, "keep")}
                captions.update({int(r.row): self._caption(int(r.row), f"score {r.score:.2f}")
                                 for r in members.itertuples()})
                color = {row: "black" if row == first else "tab:red" for row in shown}
            rows.append([(self._thumbnail(row), captions[row], color[row])
                         for row in shown[:_GALLERY_COLUMNS]])
        return rows

    def _outlier_rows(self, found: pd.DataFrame) -> list[list[tuple[Any, str, str]]]:
        rows = []
        for finding in found.itertuples():
            row = int(finding.row)
            cells = [(self._thumbnail(row), self._caption(row, f"outlier {finding.score:.2f}"),
                      "tab:red")]
            near = [] if self._neighbours is None else self._neighbours[row]
            cells += [(self._thumbnail(int(n)), self._caption(int(n), "a neighbour"), "black")
                      for n in near[:_GALLERY_COLUMNS - 1]]
            rows.append(cells)
        return rows

    def _label_error_rows(self, found: pd.DataFrame) -> list[list[tuple[Any, str, str]]]:
        probabilities, classes = self.probabilities_, list(self.classes_)
        flagged = set(self.issues.loc[self.issues["issue"] == "label_error", "row"].astype(int))
        rows = []
        for finding in found.itertuples():
            row = int(finding.row)
            suggested = classes.index(finding.suggested_label)
            cells = [(self._thumbnail(row),
                      f"row {row}\ngiven: {plain(finding.given_label)}\nsuggested: "
                      f"{plain(finding.suggested_label)} ({finding.score:.2f})", "tab:red")]
            mates = [r for r in np.flatnonzero(self._labels == finding.suggested_label)
                     if r not in flagged and np.isfinite(probabilities[r, suggested])]
            mates = sorted(mates, key=lambda r: -probabilities[r, suggested])[:_TYPICAL]
            cells += [(self._thumbnail(int(r)), f"row {r}\ntypical\n{plain(self._labels[r])}",
                       "black") for r in mates]
            rows.append(cells)
        return rows

    def _thumbnail(self, row: int) -> np.ndarray | None:
        """Row ``row`` of X as a small uint8 array: (H, W) for grey images, (H, W, 3) else."""
        try:
            image = load_item(self._items[row])
        except (ValueError, OSError):
            return None
        image.thumbnail((_THUMBNAIL, _THUMBNAIL))
        pixels = np.asarray(image)
        if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            return pixels[..., 0]  # grey: shown with a grey colour map, not in false colour
        return pixels


def _finding_line(finding: pd.Series) -> str:
    where = f"row {finding['row']}" + (f" {finding['path']}" if finding["path"] is not None
                                       else "")
    detail = ""
    if finding["issue"] in ("exact_duplicate", "near_duplicate"):
        detail = f" (copy of row {finding['duplicate_of']})"
    elif finding["issue"] == "label_conflict":
        detail = f" (group {finding['group']}, labelled {plain(finding['given_label'])!r})"
    elif finding["issue"] == "label_error":
        detail = (f" (given {plain(finding['given_label'])!r}, suggested "
                  f"{plain(finding['suggested_label'])!r})")
    return f"{finding['issue']:<15}  score {finding['score']:.2f}  {where}{detail}"


def _grid(rows: list[list[tuple[Any, str, str]]], title: str):
    """A figure of ``rows`` of (thumbnail or None, caption, caption colour)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the audit's galleries need matplotlib: pip install matplotlib") from exc
    columns = max(4, max(len(cells) for cells in rows))  # 4: room for the title, left-aligned
    lines = max(caption.count("\n") + 1 for cells in rows for _, caption, _ in cells)
    cell_w, cell_h = 1.9, 1.9 + 0.16 * lines
    width = cell_w * columns
    title = "\n".join(textwrap.fill(line, int(width * 11)) for line in title.splitlines())
    figure = Figure(figsize=(width, cell_h * len(rows) + 0.3 + 0.25 * (title.count("\n") + 1)),
                    layout="constrained")
    figure.suptitle(title, fontsize=11)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for line, cells in zip(axes, rows):
        for ax in line:
            ax.set_axis_off()
        for ax, (pixels, caption, color) in zip(line, cells):
            if pixels is None:
                ax.text(0.5, 0.5, "cannot be read", ha="center", va="center", fontsize=8)
            elif pixels.ndim == 2:
                ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(pixels, interpolation="nearest")
            ax.set_title(caption, fontsize=8, color=color)
    return figure


def _save(figure, path: str) -> None:
    figure.savefig(path, dpi=90, format="png")


# --- audit -------------------------------------------------------------------------------------


@validate_params(
    {
        "X": "no_validation",  # as_items checks every accepted form, with its own messages
        "y": ["array-like", None],
        "estimator": "no_validation",
        "cv": [Interval(Integral, 2, None, closed="left")],
        "threshold": [Interval(Real, 0, 2, closed="both"), StrOptions({"auto"})],
        "random_state": ["random_state"],
        "on_error": [StrOptions({"raise", "nan"})],
        "progress": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def audit(X: Any, y: Any = None, *, estimator: Any = None, cv: int = 5,
          threshold: float | str = "auto", random_state: Any = None, on_error: str = "raise",
          progress: bool = False) -> AuditReport:
    """Find exact and near-duplicates, label conflicts, outliers and likely label errors.

    The images are decoded once (pixel signatures) and embedded once; every detector works on
    those (see the module docstring for the rules). Nothing is changed: the report lists what
    to look at, most certain first, and :meth:`AuditReport.plot` draws it.

    Parameters
    ----------
    X : array-like of images or of image paths, or array of shape (n_samples, n_features)
        Anything :class:`~skdeep.PretrainedCNNFeatures` accepts, or a 2-D floating-point array
        of embeddings (then there are no pixels: no exact duplicates, no pixel rule, no
        galleries).
    y : array-like of shape (n_samples,), default=None
        The given labels. Without them, label conflicts and label errors are not checked.
    estimator : transformer, default=None
        Makes the embeddings; default ``PretrainedCNNFeatures(image_size=...)`` with the input
        size of ``image_size="auto"`` (96 px for images of at most 64 px, else the weights'
        own). Fitted here if it is not yet. A transformer with an ``on_error`` parameter other
        than this function's is used as a clone with ``on_error`` set.
    cv : int, default=5
        Folds of the out-of-fold probabilities for label errors; lowered, with a note, to the
        size of the smallest class (or the number of groups) when that is smaller.
    threshold : "auto" or float, default="auto"
        The near-duplicate rule, as for :func:`~skdeep.model_selection.find_near_duplicates`.
    random_state : int, RandomState instance or None, default=None
        Seed of the folds.
    on_error : {"raise", "nan"}, default="raise"
        An unreadable image raises an error naming its row and path, or (``"nan"``) is left
        out of every detector, listed in ``unreadable_`` and counted in the summary, with a
        :class:`~skdeep.BadImageWarning`.
    progress : bool, default=False
        Progress bars (tqdm, on stderr).

    Returns
    -------
    AuditReport

    Raises
    ------
    ValueError
        For fewer than 2 (readable) images, labels that do not match X, or a class with fewer
        than 2 images.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import audit
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(2, 32)) * 5
    >>> labels = np.repeat(["cat", "dog"], 30)
    >>> embeddings = centres[(labels == "dog").astype(int)] + rng.normal(size=(60, 32))
    >>> labels[3] = "dog"  # a cat labelled dog
    >>> report = audit(embeddings, labels, random_state=0)
    >>> report.issues[["row", "issue", "given_label", "suggested_label"]].values.tolist()
    [[3, 'label_error', 'dog', 'cat']]

    Images are embedded with a pretrained CNN (small and fast here):

    >>> from skdeep import PretrainedCNNFeatures
    >>> images = rng.integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    >>> images[7] = images[2]  # the same image twice
    >>> cnn = PretrainedCNNFeatures(image_size=32, precision="fp32", layer="blocks.1")
    >>> report = audit(images, estimator=cnn)
    >>> report.issues[["row", "issue", "duplicate_of"]].values.tolist()
    [[7, 'exact_duplicate', 2]]
    >>> report.summary["exact_duplicate"], report.summary["n_groups"]
    (1, 1)
    """
    if hasattr(X, "__len__") and not isinstance(X, (str, os.PathLike)) and len(X) == 0:
        raise ValueError("X is empty: audit needs at least 2 images.")
    items = None if is_embedding_matrix(X) else as_items(X)
    n = len(X) if items is None else len(items)
    if n < 2:
        raise ValueError(f"X has {n} image; audit needs at least 2 (duplicates, outliers and "
                         "label errors are found by comparing images).")
    labels = check_labels(y, n) if y is not None else None
    if labels is not None:
        _check_classes(labels)  # before the work, not after it
    embedded = embed_images(X if items is None else items, estimator, on_error=on_error,
                            progress=progress)
    embeddings, signatures, provenance = (embedded.embeddings, embedded.signatures,
                                          embedded.provenance)
    paths = [_path_of(item) for item in items] if items is not None else [None] * n

    bad = ~np.isfinite(embeddings).all(axis=1)
    if signatures is not None:
        bad |= np.array([digest is None for digest in signatures.digests])
    readable = np.flatnonzero(~bad)
    if len(readable) < 2:
        raise ValueError(f"only {len(readable)} of the {n} images can be read; audit needs at "
                         "least 2.")
    unreadable = pd.DataFrame({"row": np.flatnonzero(bad).astype(np.int64),
                               "path": [paths[row] for row in np.flatnonzero(bad)]},
                              columns=["row", "path"])
    notes: list[str] = []
    if len(unreadable):
        notes.append(f"{len(unreadable)} unreadable image(s) left out of every check: rows "
                     f"{preview(unreadable['row'].to_numpy())}")

    # Near-duplicates, on the readable rows, numbered back as rows of X.
    found = find_near_duplicates(
        embeddings[readable], threshold=threshold,
        signatures=None if signatures is None else ImageSignatures(
            signatures.digests[readable], signatures.thumbnails[readable]))
    groups = np.full(n, -1, dtype=np.int64)
    groups[readable] = found.groups
    pairs = found.pairs.copy()
    pairs["first"] = readable[pairs["first"].to_numpy()].astype(np.int64)
    pairs["second"] = readable[pairs["second"].to_numpy()].astype(np.int64)
    digests = None if signatures is None else signatures.digests
    findings = _duplicate_findings(groups, pairs, digests, found.thresholds)
    if labels is not None:
        findings += _conflict_findings(groups, labels, findings)

    z, ratio, neighbours = _outlier_statistic(found.neighbours, readable, n)
    findings += [{"row": int(row), "issue": "outlier", "score": 1.0 - OUTLIER_Z / z[row]}
                 for row in readable if z[row] > OUTLIER_Z and ratio[row] >= OUTLIER_MIN_RATIO]

    probabilities = classes = label_thresholds = None
    if labels is not None:
        probabilities, classes, label_thresholds, folds_note = _oof_probabilities(
            embeddings, labels, groups, readable, cv, random_state)
        if folds_note:
            notes.append(folds_note)
            warnings.warn(folds_note, UserWarning, stacklevel=2)
        if probabilities is not None:
            findings += _label_error_findings(probabilities, labels, classes, label_thresholds,
                                              readable, neighbours)

    issues = _issue_table(findings, paths, groups, labels)
    summary = {name: int((issues["issue"] == name).sum()) for name in ISSUE_TYPES}
    sizes = np.bincount(groups[readable])
    summary.update(n_images=int(n), n_unreadable=int(len(unreadable)),
                   n_groups=int((sizes > 1).sum()))
    thresholds = {
        **found.thresholds, "outlier_z": OUTLIER_Z, "outlier_min_ratio": OUTLIER_MIN_RATIO,
        "label": None if label_thresholds is None else {
            str(plain(c)): float(t) for c, t in zip(classes, label_thresholds)},
    }
    return AuditReport(issues=issues, summary=summary, groups=groups, pairs=pairs,
                       probabilities=probabilities, classes=classes, outlier_scores=z,
                       unreadable=unreadable, thresholds=thresholds, notes=notes,
                       provenance=provenance, items=items, labels=labels, neighbours=neighbours)


# --- steps -------------------------------------------------------------------------------------


def _path_of(item: Any) -> str | None:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else None


def _duplicate_findings(groups: np.ndarray, pairs: pd.DataFrame, digests: np.ndarray | None,
                        thresholds: dict) -> list[dict]:
    """Each member of a near-duplicate group but its first: exact or near, scored."""
    similarity: dict[int, float] = {}  # row -> similarity to its closest group mate
    for pair in pairs.itertuples():
        cut = thresholds.get(pair.reason)
        score = 1.0 if pair.reason == "exact" or not cut else max(0.0, 1 - pair.distance / cut)
        for row in (pair.first, pair.second):
            similarity[int(row)] = max(similarity.get(int(row), 0.0), score)
    findings = []
    for members in _copies(groups):
        seen: dict[Any, int] = {}  # digest -> its first row in the group
        for row in members:
            row = int(row)
            digest = None if digests is None else digests[row]
            original = seen.setdefault(digest, row) if digest is not None else row
            if row == members[0]:
                continue
            exact = original != row
            findings.append({"row": row, "issue": "exact_duplicate" if exact
                             else "near_duplicate",
                             "score": 1.0 if exact else similarity.get(row, 0.0),
                             "duplicate_of": original if exact else int(members[0])})
    return findings


def _copies(groups: np.ndarray) -> list[np.ndarray]:
    """The rows of each group of more than one image (-1, unreadable, is no group), ascending,
    groups in order of their first row."""
    rows = np.flatnonzero(groups >= 0)
    order = rows[np.argsort(groups[rows], kind="stable")]
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    return [members for members in np.split(order, bounds) if len(members) > 1]


def _conflict_findings(groups: np.ndarray, labels: np.ndarray,
                       duplicates: list[dict]) -> list[dict]:
    """Every member of a group whose given labels differ; scored as sure as its copy is."""
    score = {finding["row"]: finding["score"] for finding in duplicates}
    findings = []
    for members in _copies(groups):
        values, counts = np.unique(labels[members].astype(str), return_counts=True)
        if len(values) < 2:
            continue
        top = np.flatnonzero(counts == counts.max())
        majority = None
        if len(top) == 1:
            majority = labels[members][labels[members].astype(str) == values[top[0]]][0]
        mates = [score[int(row)] for row in members[1:]]
        for row in members:
            findings.append({"row": int(row), "issue": "label_conflict",
                             "score": score.get(int(row), max(mates)),
                             "suggested_label": majority})
    return findings


def _outlier_statistic(neighbours: Neighbours | None, readable: np.ndarray, n: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per row of X (NaN where not computed): the robust z of the log mean cosine distance to
    the nearest neighbours (the near-duplicate search's, over the ``readable`` rows), and that
    distance over the median's; then each row's neighbours as rows of X (-1: none), or None."""
    z, ratio = np.full(n, np.nan), np.full(n, np.nan)
    if neighbours is None or neighbours.indices.shape[1] == 0:
        return z, ratio, None
    searched = (neighbours.indices >= 0).all(axis=1)
    nearby = np.full((n, neighbours.indices.shape[1]), -1, dtype=np.int64)
    nearby[readable[searched]] = readable[neighbours.indices[searched]]
    if searched.sum() < MIN_IMAGES_FOR_OUTLIERS:
        return z, ratio, nearby
    spread = np.log(neighbours.distances[searched].mean(axis=1) + 1e-6)
    centre = np.median(spread)
    mad = 1.4826 * np.median(np.abs(spread - centre))
    ratio[readable[searched]] = np.exp(spread - centre)
    if mad > 0:
        z[readable[searched]] = (spread - centre) / mad
    return z, ratio, nearby


def _oof_probabilities(embeddings, labels, groups, readable, cv, random_state):
    """Out-of-fold class probabilities of the linear probe, folds kept off near-duplicates:
    (probabilities (n, k) with NaN rows, classes, per-class thresholds t_j, note or None);
    probabilities and thresholds are None when fewer than 2 folds can be drawn."""
    given = labels[readable]
    classes, codes, counts = _check_classes(given, readable=len(readable) < len(labels))
    n_groups = len(np.unique(groups[readable]))
    folds = int(min(cv, counts.min(), n_groups))
    if folds < 2:
        return None, classes, None, (
            "label errors not checked: the images are copies of one another (one group of "
            "near-duplicates), so no image can be predicted from images that are not its copies")
    note = None
    if folds < cv:
        why = ("the smallest class" if counts.min() <= n_groups
               else "the number of near-duplicate groups")
        note = (f"label errors from {folds}-fold instead of {cv}-fold cross-validation: "
                f"{why} has only {min(counts.min(), n_groups)}")
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=random_state)
    features = embeddings[readable]
    probabilities = np.zeros((len(readable), len(classes)))
    strength = min(1.0, PROBE_C * _PROBE_FEATURES / features.shape[1])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))
    with warnings.catch_warnings():
        # Few images per class per fold are the point here, not a problem to report.
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(splitter.split(features, codes, groups[readable]))
    for train, test in splits:
        if len(np.unique(codes[train])) < 2:  # one class left to learn: it is all one can say
            probabilities[np.ix_(test, np.unique(codes[train]))] = 1.0
            continue
        model = clone(probe).fit(features[train], codes[train])
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
    thresholds = np.array([probabilities[codes == j, j].mean() for j in range(len(classes))])
    full = np.full((len(labels), len(classes)), np.nan)
    full[readable] = probabilities
    return full, classes, thresholds, note


def _check_classes(labels: np.ndarray, readable: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, each label's class index, images per class); at least 2 classes of 2."""
    classes = _sorted_classes(labels)
    index = {value: j for j, value in enumerate(classes)}
    codes = np.array([index[value] for value in labels], dtype=np.intp)
    counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2:
        raise ValueError(f"y has a single class ({plain(classes[0])!r}); label errors need at "
                         "least 2 (give y=None to audit without labels).")
    if counts.min() < 2:
        small = plain(classes[int(np.argmin(counts))])
        raise ValueError(f"class {small!r} has only {counts.min()}{' readable' * readable} "
                         "image; finding label errors needs at least 2 per class (or give "
                         "y=None to audit without labels).")
    return classes, codes, counts


def _sorted_classes(labels: np.ndarray) -> np.ndarray:
    """The distinct labels, sorted (by their text when they do not compare: 1 and "1b")."""
    present = pd.unique(pd.Series(labels, dtype=object)).tolist()
    try:
        present = sorted(present)
    except TypeError:
        present = sorted(present, key=str)
    classes = np.empty(len(present), dtype=labels.dtype if labels.dtype != object else object)
    classes[:] = present
    return classes


def _label_error_findings(probabilities, labels, classes, thresholds, readable,
                          neighbours) -> list[dict]:
    """Confident learning: below its own class's threshold, at or above another's; and few of
    its nearest neighbours (``neighbours``, rows of X; -1 where none) share its label."""
    index = {value: j for j, value in enumerate(classes)}
    given = np.array([index[value] for value in labels[readable]], dtype=np.intp)
    p = probabilities[readable]
    at = np.arange(len(readable))
    confident = p >= thresholds[None, :]  # p_j >= t_j
    confident[at, given] = False  # ... for a class j other than the given one
    flagged = (p[at, given] < thresholds[given]) & confident.any(axis=1)
    if neighbours is not None:
        near = neighbours[readable]
        same = (near >= 0) & (labels[np.maximum(near, 0)] == labels[readable][:, None])
        flagged &= same.mean(axis=1) <= LABEL_NEIGHBOUR_SHARE
    suggested = np.where(confident, p, -np.inf).argmax(axis=1)
    margin = np.clip(p[at, suggested] - p[at, given], 0.0, 1.0)
    return [{"row": int(readable[i]), "issue": "label_error", "score": float(margin[i]),
             "suggested_label": classes[suggested[i]]} for i in np.flatnonzero(flagged)]


def _issue_table(findings: list[dict], paths: Sequence[str | None], groups: np.ndarray,
                 labels: np.ndarray | None) -> pd.DataFrame:
    if not findings:
        table = pd.DataFrame({column: pd.Series(dtype=object) for column in _COLUMNS})
        table["row"] = table["row"].astype(np.int64)
        table["score"] = table["score"].astype(np.float64)
        table["group"] = table["group"].astype("Int64")
        table["duplicate_of"] = table["duplicate_of"].astype("Int64")
        return table
    table = pd.DataFrame(findings)
    rows = table["row"].to_numpy()
    table["path"] = [paths[row] for row in rows]
    table["score"] = table["score"].astype(np.float64).clip(0.0, 1.0)
    grouped = table["issue"].isin(["exact_duplicate", "near_duplicate", "label_conflict"])
    table["group"] = pd.array(np.where(grouped, groups[rows], 0), dtype="Int64")
    table.loc[~grouped.to_numpy(), "group"] = pd.NA
    copied = table.get("duplicate_of", pd.Series(np.nan, index=table.index))
    table["duplicate_of"] = pd.array(copied, dtype="Int64")
    table["given_label"] = pd.Series(
        [plain(labels[row]) for row in rows] if labels is not None else None,
        index=table.index, dtype=object)
    suggested = table.get("suggested_label", pd.Series(None, index=table.index, dtype=object))
    table["suggested_label"] = pd.Series(  # object: labels keep their type, None where none
        [None if value is None or (isinstance(value, float) and np.isnan(value))
         else plain(value) for value in suggested.astype(object)],
        index=table.index, dtype=object)
    table["order"] = table["issue"].map({name: i for i, name in enumerate(ISSUE_TYPES)})
    table = (table.sort_values(["order", "score", "row"], ascending=[True, False, True],
                               kind="stable")
             .drop(columns="order").reset_index(drop=True))
    return table[_COLUMNS]
