"""Image data to try skdeep on: a bundled Fashion-MNIST sample, and folders of image files.

- :func:`load_fashion_sample` loads 1,000 Fashion-MNIST images (100 per class) that ship inside
  the package, so that examples, tests and ``skdeep evaluate`` run offline on real data.
- :func:`load_image_folder` lists the usual one-folder-per-class layout as a ``(path, label)``
  DataFrame, ready for ``PretrainedCNNFeatures`` and ``cross_val_score``.
- :func:`find_images` lists the image files under a folder, recursively, for unlabelled data.
- :func:`read_image_table` reads a CSV or parquet table of image paths (and labels), resolving
  relative paths against the table's folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._defaults import OUTPUT_MARKER
from ._inputs import preview

__all__ = [
    "IMAGE_EXTENSIONS", "RESOLVED_PATH_COLUMN", "find_images", "load_fashion_sample",
    "load_image_folder", "make_patch_images", "read_image_table",
]

#: File extensions :func:`find_images` and :func:`load_image_folder` treat as images (any case).
IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp",
)

#: The column :func:`read_image_table` adds: the path of each image file to open.
RESOLVED_PATH_COLUMN = "resolved_path"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_SAMPLE_FILE = "fashion_sample.npz"
_LICENSE_FILE = "FASHION_MNIST_LICENSE.txt"

_FASHION_DESCR = """\
.. _fashion_sample:

Fashion-MNIST sample
--------------------

**Data Set Characteristics:**

:Number of Instances: 1,000 (100 per class)
:Number of Classes: 10
:Image size: 28x28 pixels, grayscale, uint8 (0 = background, 255 = ink)
:Source: the first 100 images of each class of the Fashion-MNIST test set, in their original
    order (``source_index`` holds their positions in that set).

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) is a drop-in replacement for MNIST made of
photographs of Zalando articles: {classes}. It is harder than the digits and small enough to
cross-validate a CNN-feature pipeline on a laptop CPU in a minute or two.

The full data set (70,000 images) is at https://github.com/zalandoresearch/fashion-mnist
(on Debian and Ubuntu: ``apt-get install dataset-fashion-mnist``).

.. rubric:: References

- Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking
  Machine Learning Algorithms. arXiv:1708.07747, 2017.

.. rubric:: License

{license}"""


# --- the bundled Fashion-MNIST sample ----------------------------------------------------------


def load_fashion_sample(*, as_frame: bool = False, return_X_y: bool = False) -> Any:
    """Load 1,000 Fashion-MNIST images (28x28 grayscale, 100 of each of 10 classes).

    The sample ships inside skdeep (about 0.5 MB, MIT licensed by Zalando SE; the notice is in
    ``DESCR``), so it works offline. It is the data ``skdeep evaluate`` uses without an input.

    =================   ==============
    Classes                         10
    Samples per class              100
    Samples total                 1000
    Image                 28x28, uint8
    =================   ==============

    Parameters
    ----------
    as_frame : bool, default=False
        Also return the data as a pandas DataFrame ``frame`` with an ``"image"`` column (one
        ``(28, 28)`` uint8 array per row) and a ``"label"`` column (categorical class names).
        With ``return_X_y=True``, return ``(frame["image"], frame["label"])``.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        images : ndarray of shape (1000, 28, 28), uint8
            The images, ready for :class:`~skdeep.PretrainedCNNFeatures`.
        data : ndarray of shape (1000, 784), uint8
            The same pixels flattened, for a raw-pixel baseline.
        target : ndarray of shape (1000,), int64
            Class index 0-9 of each image.
        target_names : ndarray of shape (10,), str
            Class names, indexed by ``target``.
        frame : DataFrame of shape (1000, 2)
            Only with ``as_frame=True``: columns ``"image"`` and ``"label"``.
        source_index : ndarray of shape (1000,), int32
            Position of each image in the Fashion-MNIST test set.
        DESCR : str
            Description of the sample, its source and its license.

    (images, target) : tuple if ``return_X_y`` is True
        Arrays, or ``(Series of images, Series of class names)`` with ``as_frame=True``.

    Examples
    --------
    >>> from skdeep.datasets import load_fashion_sample
    >>> sample = load_fashion_sample()
    >>> sample.images.shape, sample.target.shape
    ((1000, 28, 28), (1000,))
    >>> sample.target_names[sample.target[:3]].tolist()
    ['Ankle boot', 'Pullover', 'Trouser']
    >>> X, y = load_fashion_sample(as_frame=True, return_X_y=True)
    >>> int(y.value_counts().min()), str(y.iloc[0])
    (100, 'Ankle boot')
    """
    package = resources.files("skdeep") / "data"
    with (package / _SAMPLE_FILE).open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
        images = npz["images"]
        target = npz["labels"].astype(np.int64)
        source_index = npz["source_index"]
    license_text = (package / _LICENSE_FILE).read_text(encoding="utf-8")
    target_names = np.asarray(FASHION_MNIST_CLASSES)
    descr = _FASHION_DESCR.format(
        classes=", ".join(FASHION_MNIST_CLASSES), license=license_text.strip()
    )
    frame = None
    if as_frame:
        column = np.empty(len(images), dtype=object)
        column[:] = list(images)  # one (28, 28) array per row
        labels = pd.Categorical.from_codes(target, categories=list(FASHION_MNIST_CLASSES))
        frame = pd.DataFrame({"image": column, "label": labels})
    if return_X_y:
        if frame is not None:
            return frame["image"], frame["label"]
        return images, target
    return Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=target_names,
        frame=frame,
        source_index=source_index,
        DESCR=descr,
    )


def make_patch_images(n_samples: int = 200, *, size: int = 32, patch: int = 6, noise: float = 40.0,
                      random_state: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic images whose class is decided only by one small bright patch: a map check.

    Each image is grey noise with one ``patch`` x ``patch`` square, red (class ``"red"``) or
    blue (class ``"blue"``), at a random place inside a random quadrant (``size // 8`` or more
    from its edges when the patch leaves room). A model that learnt
    the task can only have learnt the patch, so its activation maps should peak in the patch's
    quadrant (see :mod:`skdeep.explain`).

    Parameters
    ----------
    n_samples : int, default=200
        Number of images, half of each class.
    size : int, default=32
        Side of the square images (even).
    patch : int, default=6
        Side of the patch, at most ``size // 2``.
    noise : float, default=40.0
        Standard deviation of the grey background's noise, around 128.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    images : ndarray of shape (n_samples, size, size, 3), uint8
    labels : ndarray of shape (n_samples,), str
    quadrants : ndarray of shape (n_samples,), int
        Where each patch lies: 0 top left, 1 top right, 2 bottom left, 3 bottom right.

    Examples
    --------
    >>> from skdeep.datasets import make_patch_images
    >>> images, labels, quadrants = make_patch_images(4, random_state=0)
    >>> images.shape, sorted(set(labels))
    ((4, 32, 32, 3), ['blue', 'red'])
    """
    from sklearn.utils import check_random_state

    half = size // 2
    if size % 2 or not 1 <= patch <= half:
        raise ValueError(f"size must be even and 1 <= patch <= size // 2; got size={size}, "
                         f"patch={patch}.")
    rng = check_random_state(random_state)
    labels = np.where(np.arange(n_samples) % 2 == 0, "red", "blue")
    labels = labels[rng.permutation(n_samples)]
    quadrants = rng.randint(0, 4, size=n_samples)
    images = np.clip(rng.normal(128, noise, size=(n_samples, size, size, 1)), 0, 255)
    images = np.repeat(images, 3, axis=3).astype(np.uint8)
    colours = {"red": (255, 40, 40), "blue": (40, 80, 255)}
    # Away from the quadrant's edges (by size // 8 where the patch leaves room), so that the
    # patch lies clearly in one quadrant, and the centre crop of the networks keeps it.
    margin = min(size // 8, (half - patch) // 2)
    for image, label, quadrant in zip(images, labels, quadrants):
        top = (quadrant // 2) * half + rng.randint(margin, half - patch - margin + 1)
        left = (quadrant % 2) * half + rng.randint(margin, half - patch - margin + 1)
        image[top:top + patch, left:left + patch] = colours[label]
    return images, labels, quadrants


# --- folders of image files --------------------------------------------------------------------


def find_images(path: str | os.PathLike, extensions: Iterable[str] | None = None) -> list[str]:
    """Every image file under ``path``, recursively, in a deterministic (sorted) order.

    Hidden files and folders (names starting with ``"."``) are skipped. Symbolic links to folders
    are followed, but each real folder is listed once and a link back to ``path`` or one of its
    parents (``up -> ..``) is skipped, so link loops end. Each real file is listed once: when
    links make one file reachable by several paths, the first path in sorted order is kept. The
    returned paths start with ``path`` as given (relative stays relative).

    Parameters
    ----------
    path : str or os.PathLike
        A folder.
    extensions : iterable of str, default=None
        File extensions to accept, compared case-insensitively, with or without the dot.
        ``None`` means :data:`IMAGE_EXTENSIONS`.

    Returns
    -------
    list of str
        Sorted by the path relative to ``path``. Empty when the folder holds no image.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is a file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "sub").mkdir()
    >>> Image.new("RGB", (8, 8)).save(root / "sub" / "b.png")
    >>> Image.new("RGB", (8, 8)).save(root / "a.JPG")
    >>> [pathlib.Path(p).relative_to(root).as_posix() for p in find_images(root)]
    ['a.JPG', 'sub/b.png']
    """
    root = _check_folder(path)
    suffixes = _normalize_extensions(extensions)
    return [os.path.join(root, rel) for rel, _ in _relative_images(root, suffixes)]


def load_image_folder(
    path: str | os.PathLike, extensions: Iterable[str] | None = None
) -> pd.DataFrame:
    """List a one-folder-per-class image collection as a DataFrame of ``path`` and ``label``.

    The layout is the one of ``torchvision.datasets.ImageFolder`` and most labelled image sets::

        path/
            cat/001.jpg
            cat/002.jpg
            dog/sub/folders/are/fine.png

    Each direct subfolder of ``path`` is a class (its name is the label); its images are found
    recursively, following symbolic links as :func:`find_images` does (loops end, each real
    file once per class). Nothing is decoded here: unreadable files surface when the images are
    used (see ``on_error`` of :class:`~skdeep.PretrainedCNNFeatures`).

    Parameters
    ----------
    path : str or os.PathLike
        The root folder.
    extensions : iterable of str, default=None
        File extensions to accept, compared case-insensitively, with or without the dot.
        ``None`` means :data:`IMAGE_EXTENSIONS`.

    Returns
    -------
    DataFrame with columns ``path`` (str) and ``label`` (str)
        One row per image, sorted by label, then by path. Paths start with ``path`` as given.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is a file.
    ValueError
        If ``path`` holds no image at all, or holds images but no class subfolders (a flat
        folder: use :func:`find_images` for unlabelled images), or if one real image file is
        reached from two class folders (through a symbolic link), which would label it twice.

    Warns
    -----
    UserWarning
        When images lying directly in ``path`` (outside any class folder) are ignored, or when
        some class folders hold no image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("dog", "cat"):
    ...     (root / label).mkdir()
    ...     for i in range(2):
    ...         Image.new("RGB", (8, 8)).save(root / label / f"{i}.png")
    >>> frame = load_image_folder(root)
    >>> frame["label"].tolist()
    ['cat', 'cat', 'dog', 'dog']
    >>> pathlib.Path(frame["path"][0]).relative_to(root).as_posix()
    'cat/0.png'
    """
    root = _check_folder(path)
    suffixes = _normalize_extensions(extensions)
    entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    classes = [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    for name in [c for c in classes if os.path.isfile(os.path.join(root, c, OUTPUT_MARKER))]:
        classes.remove(name)  # a report folder inside the collection: not a class
        _note_skipped(os.path.join(root, name), stacklevel=3)
    loose = [e.name for e in entries if not e.name.startswith(".") and e.is_file()
             and e.name.lower().endswith(suffixes)]
    if not classes:
        if loose:
            raise ValueError(
                f"{root!r} holds {len(loose)} image(s) but no class subfolders; a labelled folder "
                f"looks like {os.path.join(root, '<class>', '<image>')}. For unlabelled images "
                "use skdeep.datasets.find_images (or 'skdeep extract')."
            )
        raise ValueError(f"{root!r} is empty: no class subfolders and no images.")
    rows: list[tuple[str, str]] = []
    empty: list[str] = []
    listed_as: dict[str, str] = {}  # real file -> its path in the frame
    for label in classes:
        folder = os.path.join(root, label)
        found = _relative_images(folder, suffixes)
        if not found:
            empty.append(label)
        for rel, real in found:
            image = os.path.join(folder, rel)
            if real in listed_as:
                raise ValueError(
                    f"the image file {real!r} is in two class folders, as {listed_as[real]!r} and "
                    f"{image!r} (through a symbolic link): it would be labelled twice. Remove the "
                    "link, or copy the file if it really belongs to both classes."
                )
            listed_as[real] = image
            rows.append((image, label))
    if not rows:
        raise ValueError(
            f"{root!r} has class subfolders {preview(classes, 5)} but none holds an image "
            f"(extensions {', '.join(suffixes)})."
        )
    if loose:
        warnings.warn(
            f"{len(loose)} image(s) directly in {root!r} belong to no class folder and are "
            f"ignored: {preview(loose, 5)}.", UserWarning, stacklevel=2,
        )
    if empty:
        warnings.warn(
            f"class folder(s) {preview(empty, 5)} in {root!r} hold no image and are ignored.",
            UserWarning, stacklevel=2,
        )
    return pd.DataFrame(rows, columns=["path", "label"])


def _check_folder(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path; got {type(path).__name__}.")
    root = os.fspath(path)
    if not os.path.exists(root):
        raise FileNotFoundError(f"folder not found: {root!r}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root!r} is a file, not a folder of images")
    return root


def _normalize_extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    suffixes = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip(". "):
            raise ValueError(f"extensions must be non-empty strings such as '.png'; got {ext!r}.")
        suffixes.append("." + ext.strip().lstrip(".").lower())
    if not suffixes:
        raise ValueError("extensions is empty: no file could match.")
    return tuple(sorted(set(suffixes)))


def _relative_images(root: str, suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """Image files under ``root`` as sorted ``(relative path, real path)`` pairs.

    Hidden entries are skipped. Linked folders are followed, but a real folder is listed once
    and a link to ``root`` or to one of its parents is skipped: ``up -> ..`` would otherwise list
    every image again at each level (until the OS refuses the path), and two such links make the
    walk exponential. A real file reached by several paths is listed once, under the path that
    sorts first: the walk visits folders in sorted order, so the first visit of a folder is its
    first path.
    """
    real_root = os.path.realpath(root)
    walked: set[str] = set()
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real_folder = os.path.realpath(folder)
        if real_folder in walked or _encloses(real_folder, real_root):
            subfolders[:] = []  # listed already under an earlier path, or a loop upwards
            continue
        walked.add(real_folder)
        if OUTPUT_MARKER in files:  # skdeep's own output (a report's PNG plots): not images
            subfolders[:] = []
            _note_skipped(folder)
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        rel_folder = os.path.relpath(folder, root)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(suffixes):
                file = os.path.join(folder, name)
                real = os.path.realpath(file) if os.path.islink(file) else (
                    os.path.join(real_folder, name))
                found.append((os.path.normpath(os.path.join(rel_folder, name)), real))
    # Sort on path components so that "a/b.png" and "a-b.png" order the same on every OS.
    found.sort(key=lambda pair: Path(pair[0]).parts)
    first: dict[str, str] = {}  # real path -> its first relative path (dicts keep that order)
    for rel, real in found:
        first.setdefault(real, rel)
    return [(rel, real) for real, rel in first.items()]


def mark_output_folder(folder: str | os.PathLike) -> Path:
    """Mark ``folder`` as skdeep's own output, so that it is never read as images.

    ``skdeep evaluate`` and ``skdeep audit`` write their report folders with PNG plots in them;
    run inside the image collection (``cd photos && skdeep evaluate .``), the next run would
    read those plots as images of a class named after the report folder. Each such folder holds
    the small file :data:`~skdeep._defaults.OUTPUT_MARKER` (``.skdeep-output``), and
    :func:`find_images` and :func:`load_image_folder` skip any folder holding it, with a
    warning that names it.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing folder.

    Returns
    -------
    pathlib.Path
        The marker file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "report").mkdir()
    >>> Image.new("RGB", (8, 8)).save(root / "report" / "plot.png")
    >>> _ = mark_output_folder(root / "report")
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     find_images(root)
    []
    """
    marker = Path(folder) / OUTPUT_MARKER
    marker.write_text("This folder was written by skdeep. skdeep never reads a folder holding "
                      "this file as images.\n", encoding="utf-8")
    return marker


def _note_skipped(folder: str, stacklevel: int = 4) -> None:
    warnings.warn(f"{folder!r} holds skdeep's own output (the file {OUTPUT_MARKER}): its files "
                  "are not read as images", UserWarning, stacklevel=stacklevel)


def _encloses(folder: str, path: str) -> bool:
    """Whether real path ``folder`` is a parent (at any depth, not itself) of real path ``path``."""
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


# --- tables of image paths (CSV / parquet) ---------------------------------------------------


def read_image_table(
    path: str | os.PathLike, *, path_column: str = "path", label_column: str | None = None
) -> pd.DataFrame:
    """Read a CSV or parquet table of image paths (and labels), as ``skdeep extract`` does.

    Relative paths in the table are resolved against the table's folder: a table is usually
    written next to its images, and it must mean the same files wherever the command runs. Only
    a path that exists relative to the current folder and not next to the table is taken from
    the current folder. The table comes back whole: every column as read, under its own name
    (the path column keeps the values as written, so results join back on them; the label column
    and any others, ``sku`` or ``price``, are untouched), plus one added column,
    ``resolved_path`` (``RESOLVED_PATH_COLUMN``), with the paths to open. Nothing is opened
    here: missing or unreadable files are reported when the images are read (see ``on_error``).

    Duplicate rows are kept (each gets its own, identical, features) with a warning: copies of
    one image in both the training and the test folds of a cross-validation inflate its scores.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv``, ``.tsv``, ``.txt`` (comma-separated), ``.parquet`` or ``.pq`` file.
    path_column : str, default="path"
        Column holding the image paths (read as text, so ``0001`` stays ``0001``).
    label_column : str or None, default=None
        Column holding the labels, when needed (it must exist and have no missing value).

    Returns
    -------
    DataFrame
        The table's columns and ``resolved_path``, one row per row of the table, in its order.

    Raises
    ------
    FileNotFoundError
        If the table does not exist.
    ValueError
        If it is not a regular file, cannot be parsed, has no rows, lacks a column, has a
        missing value in the path or label column (the message names the rows), or already has
        a ``resolved_path`` column.

    Warns
    -----
    UserWarning
        When several rows name the same file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> pd.DataFrame({"path": ["img/a.png"], "species": ["cat"], "sku": ["A-1"]}).to_csv(
    ...     folder / "index.csv", index=False)
    >>> table = read_image_table(folder / "index.csv", label_column="species")
    >>> list(table.columns)
    ['path', 'species', 'sku', 'resolved_path']
    >>> table["path"].tolist(), table["resolved_path"].tolist() == [str(folder / "img" / "a.png")]
    (['img/a.png'], True)
    """
    table_path = os.fspath(path)
    if not os.path.exists(table_path):
        raise FileNotFoundError(f"table not found: {table_path!r}")
    if not os.path.isfile(table_path):
        raise ValueError(f"{table_path!r} is not a regular file; give a .csv, .tsv or .parquet "
                         "table of image paths.")
    suffix = Path(table_path).suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        try:
            table = pd.read_csv(table_path, sep=sep, dtype={path_column: str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {table_path!r} as {suffix[1:].upper()}: {exc}") from exc
    elif suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(table_path)
        except ImportError as exc:
            raise ImportError(f"reading {table_path!r} needs pyarrow: pip install pyarrow") from exc
        except Exception as exc:  # pyarrow raises its own error types for corrupt files
            raise ValueError(f"cannot read {table_path!r} as parquet: {exc}") from exc
    else:
        raise ValueError(
            f"{table_path!r} is neither a folder nor a table: expected a folder of images or a "
            ".csv, .tsv or .parquet file with a path column."
        )
    needed = [path_column] + ([label_column] if label_column is not None else [])
    missing = [column for column in needed if column not in table.columns]
    if missing:
        option = "path" if missing[0] == path_column else "label"
        raise ValueError(
            f"{table_path!r} has no column {missing[0]!r}; its columns are "
            f"{list(map(str, table.columns))[:10]}. Name the right one with {option}_column= "
            f"(--{option}-column on the command line)."
        )
    if len(table) == 0:
        raise ValueError(f"{table_path!r} has no rows.")
    if RESOLVED_PATH_COLUMN in table.columns:
        raise ValueError(f"{table_path!r} already has a column {RESOLVED_PATH_COLUMN!r}, the name "
                         "of the column read_image_table adds: rename it.")
    for column in needed:
        blank = table[column].isna().to_numpy()
        if blank.any():
            rows = np.flatnonzero(blank)
            raise ValueError(f"{table_path!r}: column {column!r} is empty in rows {preview(rows)}")
    written = table[path_column].astype(str).tolist()
    base = os.path.dirname(os.path.abspath(table_path))
    files = [_locate(value, base) for value in written]
    _warn_duplicates(table_path, files)
    table[RESOLVED_PATH_COLUMN] = files
    return table



def _locate(value: str, base: str) -> str:
    if os.path.isabs(value):
        return value
    beside = os.path.join(base, value)
    if os.path.exists(beside) or not os.path.exists(value):
        return beside
    return value


def _warn_duplicates(table_path: str, files: list[str]) -> None:
    """One warning naming the rows that repeat a file listed in an earlier row."""
    first: dict[str, int] = {}
    repeats = []
    for row, file in enumerate(files):
        key = os.path.normcase(os.path.abspath(file))
        if key in first:
            repeats.append(f"row {row} repeats row {first[key]} ({file!r})")
        else:
            first[key] = row
    if repeats:
        more = f"; and {len(repeats) - 5} more" if len(repeats) > 5 else ""
        warnings.warn(
            f"{table_path!r} lists {len(repeats)} file(s) more than once: "
            f"{'; '.join(repeats[:5])}{more}. Each row gets its own (identical) features; in a "
            "cross-validation, copies in both the training and the test folds inflate the "
            "scores: drop them (table.drop_duplicates) unless they are meant.",
            UserWarning, stacklevel=2,
        )
