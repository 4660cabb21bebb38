"""The ``skdeep`` command: evaluate, audit, extract, backbones, layers.

Parsing and dispatch only: the work is done by :mod:`skdeep.evaluation`,
:class:`skdeep.PretrainedCNNFeatures` and :mod:`skdeep.datasets`, which are usable from Python
the same way (:func:`skdeep.audit` for ``audit``). Expected failures (a missing file, an unreadable image, unknown names, weights that
cannot be fetched offline, an output that cannot be written, a broken feature cache) print one
line ``skdeep: error: ...`` on stderr and exit with 1; bad arguments exit with 2. ``--debug`` shows
the full traceback instead. Outputs are checked before the work starts, and written so that a
failure leaves the earlier files as they were. Ctrl-C prints one line saying how to resume (run
the same command again) and exits with 130: ``extract`` keeps the rows written so far next to
its output (``OUT.partial``), and a ``--cache`` keeps every feature computed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Only the standard library, skdeep._defaults, skdeep._strategies and skdeep.recipes (names
# only) here: torch, timm, scikit-learn and pandas take seconds to import, so each command
# imports what it uses when it runs, and --help is instant.
from ._defaults import (
    ACTIVATION_MAPS_FILE,
    DEFAULT_BACKBONE,
    DUPLICATES,
    ON_ERROR,
    POOLINGS,
    PRECISIONS,
    SMALL_IMAGE_INPUT,
    SMALL_IMAGE_SIDE,
    TTA_NAMES,
)
from ._strategies import FINETUNE_LAST_K, FINETUNE_TTA
from ._version import __version__
from .recipes import COMPARED_RECIPE

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FORMATS = (".parquet", ".csv", ".npy")
DEFAULT_REPORT = "skdeep-report"
DEFAULT_AUDIT = "skdeep-audit"

_DESCRIPTION = """\
skdeep: pretrained convolutional networks for people who know scikit-learn.

Start with `skdeep evaluate`: it tells you, with cross-validation on your own labelled images,
whether features of a pretrained network beat raw pixels, which layer transfers best, and
(with --finetune) whether fine-tuning is worth its cost; `skdeep audit` lists the duplicates,
outliers and likely label errors worth a look before any score is trusted. Then use `skdeep extract` (or
skdeep.PretrainedCNNFeatures in a scikit-learn Pipeline) to embed images with what won."""

_EPILOG = """\
examples:
  skdeep evaluate                          # bundled Fashion-MNIST sample (1,000 images)
  skdeep evaluate photos/ -o report/       # photos/<class>/<image>.jpg, report in report/
  skdeep audit photos/ -o audit/           # duplicates, outliers, label errors, galleries
  skdeep extract photos/ -o features.parquet --layer penultimate
  skdeep backbones resnet                  # backbone names containing "resnet"
  skdeep layers efficientnet_lite0 --depth 2

Run `skdeep COMMAND --help` for the options of a command. Everything runs offline with the
default backbone (efficientnet_lite0), whose ImageNet weights ship with skdeep."""

_IMAGE_SIZE_NOTE = f"""\
image size: `auto` (the default of extract and evaluate alike) feeds small images (at most
{SMALL_IMAGE_SIDE} px, such as the 28x28 sample) to the network at {SMALL_IMAGE_INPUT} px, a good trade of accuracy and
speed; larger images use the network's own size (224 for {DEFAULT_BACKBONE}). Bigger inputs are
slower and, for small images, rarely better."""

_EVALUATE_DESCRIPTION = f"""\
Which way of classifying these images works best? Cross-validated comparison of
  1. raw pixels + logistic regression (the baseline),
  2. frozen CNN features + logistic regression, for a sweep of layers from shallow to deep
     (the DeCAF protocol: how well does each depth of the network transfer?),
  3. with --finetune, the network fine-tuned on the images (FineTunedCNNClassifier): the
     new head only, the last {FINETUNE_LAST_K} units, all layers, and all layers with the recommended
     recipe (recipe={COMPARED_RECIPE!r}, see skdeep.recipes), each fitted model also
     predicting with test-time augmentation (--finetune-tta, default {FINETUNE_TTA}): the same
     fit, predicting again.
All strategies use the same stratified folds; features and pixels feed StandardScaler +
LogisticRegression.

The features of all layers come from ONE forward pass over all images before the folds are
drawn: the network is frozen and does not learn from the data, so this leaks nothing and is
the same as cross-validating a PretrainedCNNFeatures pipeline per layer, only much faster.

Prints a table (mean +- std accuracy and seconds per fold: features + fit + prediction, a
TTA row including its fit) and a recommendation: the cheapest strategy whose mean accuracy is
within one standard deviation of the best one's. Writes a report folder: results.csv,
folds.csv, results.json, summary.txt and the plots accuracy_by_layer.png,
confusion_matrix.png (best strategy) and embedding_map.png."""

_EVALUATE_EPILOG = f"""\
INPUT:
  (none)            the bundled sample: 1,000 Fashion-MNIST images, 28x28, 10 classes
  a folder          one subfolder per class: INPUT/<class>/<image> (searched recursively)
  a .csv/.parquet   a table with a path column and a label column (--path-column,
                    --label-column); relative paths are looked up next to the table first

{_IMAGE_SIZE_NOTE}

examples:
  skdeep evaluate                                    # ~1-2 minutes on a 2-core CPU
  skdeep evaluate photos/ --folds 3 --max-images 2000
  skdeep evaluate labels.csv --label-column species --backbone resnet50
  skdeep evaluate --layers blocks.2,blocks.4,penultimate --image-size 128 --map tsne
  skdeep evaluate photos/ --finetune --finetune-epochs 5   # slow without a GPU
  skdeep evaluate tiles/ --finetune --finetune-tta symmetric   # no up direction

The report goes to ./{DEFAULT_REPORT}/ unless -o is given; its files are replaced."""

_AUDIT_DESCRIPTION = """\
What should a person look at in these images before training on them? Lists, most certain
first:
  exact_duplicate   identical pixels (the same file twice, re-saved in another format)
  near_duplicate    a near-copy of an earlier image (re-encoded, brightened, shifted...)
  label_conflict    copies given different labels (every member of the group)
  outlier           far from every other image in the CNN embedding
  label_error       a label the other images contradict: confident learning on the
                    out-of-fold probabilities of a linear probe (StandardScaler +
                    LogisticRegression on the embeddings), the folds keeping
                    near-duplicates together
Each image is decoded once and embedded once. The first image of a group of copies is the one
to keep; every other copy is a finding.

Prints the counts per issue type and the top findings, and writes to the output folder:
issues.csv (one row per finding: row, path, issue, score in [0, 1], group, duplicate_of,
given_label, suggested_label), summary.json (counts, cuts, provenance, skdeep version) and one
gallery PNG per issue type found (exact_duplicate.png, near_duplicate.png...)."""

_AUDIT_EPILOG = f"""\
INPUT:
  (none)            the bundled sample: 1,000 Fashion-MNIST images, 28x28, 10 classes
  a folder          one subfolder per class: INPUT/<class>/<image> (labelled); a folder of
                    images without subfolders is audited without labels
  a .csv/.parquet   a table with a path column (--path-column) and, if it has one, a label
                    column (--label-column, default: label when the table has it)
--no-labels audits without labels: duplicates and outliers only.

{_IMAGE_SIZE_NOTE}

examples:
  skdeep audit                                  # the bundled sample
  skdeep audit photos/ -o audit/
  skdeep audit index.csv --label-column species --on-error nan
  skdeep audit photos/ --threshold 0.05         # one absolute cosine cut for near-duplicates

The output goes to ./{DEFAULT_AUDIT}/ unless -o is given; its files are replaced."""

_EXTRACT_DESCRIPTION = """\
Embed images with a pretrained CNN (frozen) and save one row of features per image: the
pooled activations of the chosen layer(s), with the image path as the row index."""

_EXTRACT_EPILOG = f"""\
INPUT:
  a folder          every image under it, recursively (sorted); index = INPUT/relative/path
  a .csv/.parquet   a table with a path column (--path-column); index = the paths as written,
                    so the features join back onto the table

OUT (the format follows the extension):
  .parquet          a table: index "path", columns <layer>_<i> (needs pyarrow)
  .csv              the same table as text, paths quoted (large: prefer parquet)
  .npy              the float32 matrix only, rows in input order; the paths are written next
                    to it, line i for row i, to OUT with the extension .paths.txt. A path that
                    is not one plain line of UTF-8 (a line break in it, a file name in another
                    encoding, a leading ") is written as a JSON string: read the file back with
                    skdeep.cli.read_paths(FILE). Only .npy keeps file names that are not UTF-8.

What made the features (skdeep, torch, timm... versions, the backbone and the SHA-256 of its
weights, preprocessing, device, precision, when) is written with them: into the parquet
schema metadata (key "skdeep.provenance", JSON), or to OUT.json next to a .csv or .npy.

OUT is checked before any image is read (its folder writable, the paths storable), and is
replaced only once completely written: a failed run leaves the earlier files as they were.

Rows are written as they are computed to OUT.partial (with a small OUT.partial.json saying how
many are done), so memory does not grow with the number of images. If the run stops (Ctrl-C, a
killed process, an unreadable image), run the same command again: it reuses the rows written,
says how many, and computes the rest; the result is the same as an uninterrupted run's.
--overwrite starts afresh instead. A partial file of other inputs or settings is never reused.

{_IMAGE_SIZE_NOTE}

Unreadable images stop the run with an error naming the file, unless --on-error nan, which
gives them a row of NaN and a warning. --cache DIR keeps the features of every image on disk,
so a second run (or `skdeep evaluate` with the same cache) skips the network.

examples:
  skdeep extract photos/ -o features.parquet
  skdeep extract photos/ -o features.npy --backbone resnet50 --layer layer3,penultimate
  skdeep extract index.csv -o features.parquet --path-column file --on-error nan
  skdeep extract photos/ -o f.parquet --image-size 160 --precision fp32 --workers 4
  skdeep extract photos/ -o features.parquet --overwrite   # ignore an interrupted run's rows"""


# --- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skdeep`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return _exit_code(exc.code)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except KeyboardInterrupt as exc:
            print(f"skdeep: interrupted{_resume_hint(args, exc)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except _UsageError as exc:
            if args.debug:
                raise
            print(f"skdeep: error: {exc} (see '{args.parser.prog} --help')", file=sys.stderr)
            return EXIT_USAGE
        except _expected_errors() as exc:
            if args.debug:
                raise
            message = in_flags(_one_line(exc))
            if isinstance(exc, (_out_of_memory_error(), MemoryError)):
                message = f"out of memory ({message}); lower --batch-size or --image-size"
            elif isinstance(exc, sqlite3.DatabaseError):  # a damaged one is replaced, not here
                message = (f"cannot use the feature cache {getattr(args, 'cache', None)} "
                           f"({message}): give --cache a folder you can write to")
            print(f"skdeep: error: {message}", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK  # pragma: no cover - every command returns


def _expected_errors() -> tuple[type[BaseException], ...]:
    from ._inputs import BadImageError
    from ._weights import WeightsUnavailableError

    # BadImageError is a ValueError; listed for clarity. OSError covers missing files, folders
    # given where files are expected, permissions and full disks; sqlite3.DatabaseError a feature
    # cache that cannot be opened or written. Anything else is a bug and keeps its traceback.
    return (BadImageError, WeightsUnavailableError, ValueError, OSError, ImportError,
            sqlite3.DatabaseError, _out_of_memory_error())


def _out_of_memory_error() -> type[BaseException]:
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


class _UsageError(Exception):
    """A bad combination of arguments, found after parsing: exit code 2 like argparse's own."""


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the command kept and how to resume."""


def _resume_hint(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """``; <what was kept and how to resume>`` for the interrupted command, or nothing."""
    if isinstance(exc, _Interrupted):
        return f"; {exc}"
    if getattr(args, "command", None) not in ("evaluate", "audit"):
        return ""
    if args.cache:
        return (f"; the features computed so far are kept in the cache {args.cache}: run the "
                "same command again to resume")
    return "; run it again with --cache DIR to keep the features computed before an interruption"


# --- the parser --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at the right --help."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"skdeep: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, _terminal_width()))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``skdeep`` command (exposed for documentation tools)."""
    parser = _Parser(prog="skdeep", description=_DESCRIPTION, epilog=_EPILOG,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"skdeep {__version__}")
    parser.set_defaults(command=None, debug=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command",
                                     parser_class=_Parser)
    _add_evaluate(commands)
    _add_audit(commands)
    _add_extract(commands)
    _add_backbones(commands)
    _add_layers(commands)
    return parser


def _command(commands, name: str, run, **kwargs) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, formatter_class=_Formatter, **kwargs)
    sub.set_defaults(run=run, parser=sub)
    sub.add_argument("--debug", action="store_true",
                     help="on an error, show the full Python traceback")
    return sub


def _add_evaluate(commands) -> None:
    sub = _command(commands, "evaluate", _run_evaluate,
                   help="compare raw pixels, CNN layers (and fine-tuning) on labelled images",
                   description=_EVALUATE_DESCRIPTION, epilog=_EVALUATE_EPILOG)
    sub.add_argument("input", nargs="?", metavar="INPUT",
                     help="class-per-folder directory, or CSV/parquet with path and label columns "
                          "(default: the bundled Fashion-MNIST sample)")
    sub.add_argument("-o", "--output", default=DEFAULT_REPORT, metavar="DIR",
                     help=f"report folder (default: ./{DEFAULT_REPORT})")
    data = sub.add_argument_group("data")
    _table_columns(data, labels=True)
    data.add_argument("--max-images", type=_int_at_least(2), metavar="N",
                      help="evaluate a stratified random subset of N images")
    method = sub.add_argument_group("method")
    _backbone_options(method)
    method.add_argument("--layers", type=_layer_list, metavar="L1,L2,...",
                        help="layers to compare, shallow to deep (default: a sweep of 3 stage "
                             "outputs and penultimate; see `skdeep layers NAME --sweep`)")
    _image_size_option(method)
    method.add_argument("--image-sizes", type=_image_sizes, metavar="N,N|auto|native",
                        help="compare these input sides, one forward pass each, e.g. auto,native "
                             "(replaces --image-size; default: --image-size alone)")
    method.add_argument("--no-pairs", dest="pairs", action="store_false",
                        help="do not score the concatenations of two layers (they cost only "
                             "logistic regressions; default: scored)")
    method.add_argument("--pooling", type=_pooling, default="avg", metavar=_POOLING_METAVAR,
                        help="how a feature map becomes a vector (default: avg)")
    method.add_argument("--folds", type=_int_at_least(2), default=5, metavar="K",
                        help="stratified cross-validation folds (default: 5)")
    method.add_argument("--duplicates", choices=DUPLICATES, default="group",
                        help="group: keep near-duplicate images (copies, re-encodings, small "
                             "shifts) in one fold, so that no test image has a copy among the "
                             "training images; ignore: plain stratified folds (default: group)")
    method.add_argument("--C", type=_positive_float, default=1.0, dest="C",
                        help="inverse regularisation of the logistic regression (default: 1.0)")
    method.add_argument("--max-iter", type=_int_at_least(1), default=1000, metavar="N",
                        help="iterations of the logistic regression (default: 1000)")
    method.add_argument("--finetune", action="store_true",
                        help="also cross-validate fine-tuning (FineTunedCNNClassifier) of the "
                             f"head only, the last {FINETUNE_LAST_K} units, all layers and all "
                             f"layers with recipe {COMPARED_RECIPE!r}, each with and without "
                             "test-time augmentation: 4 fits per fold, slow without a GPU")
    method.add_argument("--finetune-epochs", type=_int_at_least(1), metavar="N",
                        help="epochs of fine-tuning (default: the classifier's own, 10); on "
                             "small sets the fits run more, to reach the classifier's budget "
                             "of 400 optimisation steps (max_steps='auto')")
    method.add_argument("--finetune-tta", type=_tta, metavar="{flip,symmetric,none,N}",
                        help="test-time views of the fine-tuned models' TTA rows: flip, "
                             "symmetric (8 dihedral views), N random views or none (default: "
                             f"{FINETUNE_TTA})")
    method.add_argument("--calibrate", action="store_true",
                        help="also calibrate every strategy's probabilities by a temperature "
                             "fitted inside each training fold (never on the test fold), and "
                             "report log loss and ECE after calibration beside those before")
    method.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                        help="processes fitting the logistic regressions of different folds at "
                             "once; -1 = one per core (default: 1)")
    method.add_argument("--seed", type=_int_at_least(0), default=0,
                        help="seed of the folds, the subset and the fine-tuning (default: 0)")
    report = sub.add_argument_group("report")
    report.add_argument("--map", choices=("pca", "tsne"), default="pca",
                        help="2-D map of the embeddings: pca (fast) or tsne (default: pca)")
    report.add_argument("--explain", action="store_true",
                        help="also draw activation maps (where the model looks) of the most "
                             "confident correct predictions and mistakes of each class, for the "
                             f"recommended frozen strategy, into {ACTIVATION_MAPS_FILE}")
    _runtime_options(sub.add_argument_group("runtime"))


def _add_audit(commands) -> None:
    sub = _command(commands, "audit", _run_audit,
                   help="find duplicates, label conflicts, outliers and label errors in images",
                   description=_AUDIT_DESCRIPTION, epilog=_AUDIT_EPILOG)
    sub.add_argument("input", nargs="?", metavar="INPUT",
                     help="class-per-folder directory, folder of images, or CSV/parquet with a "
                          "path column (default: the bundled Fashion-MNIST sample)")
    sub.add_argument("-o", "--output", default=DEFAULT_AUDIT, metavar="DIR",
                     help=f"output folder (default: ./{DEFAULT_AUDIT})")
    data = sub.add_argument_group("data")
    data.add_argument("--path-column", default="path", metavar="NAME",
                      help="column of image paths when INPUT is a table (default: path)")
    data.add_argument("--label-column", default=None, metavar="NAME",
                      help="column of labels when INPUT is a table (default: label, when the "
                           "table has it)")
    data.add_argument("--no-labels", dest="labels", action="store_false",
                      help="ignore the labels: find duplicates and outliers only")
    method = sub.add_argument_group("method")
    _backbone_options(method)
    method.add_argument("--layer", type=_layer_list, action="extend", metavar="LAYER[,LAYER]",
                        help="layer(s) of the embedding, concatenated (default: penultimate)")
    _image_size_option(method)
    method.add_argument("--folds", type=_int_at_least(2), default=5, metavar="K",
                        help="folds of the out-of-fold probabilities for label errors, lowered "
                             "to the smallest class's size when needed (default: 5)")
    method.add_argument("--threshold", type=_threshold, default="auto", metavar="auto|D",
                        help="near-duplicates: auto (exact, pixel and embedding rules relative "
                             "to the data) or an absolute cosine distance D in [0, 2] in the "
                             "embedding (default: auto)")
    method.add_argument("--seed", type=_int_at_least(0), default=0,
                        help="seed of the folds (default: 0)")
    _runtime_options(sub.add_argument_group("runtime"))


def _add_extract(commands) -> None:
    sub = _command(commands, "extract", _run_extract,
                   help="embed images with a pretrained CNN and save the features",
                   description=_EXTRACT_DESCRIPTION, epilog=_EXTRACT_EPILOG)
    sub.add_argument("input", metavar="INPUT",
                     help="folder of images (searched recursively) or CSV/parquet with a path column")
    sub.add_argument("-o", "--output", required=True, type=_output_file, metavar="OUT",
                     help="output file: .parquet, .csv or .npy")
    data = sub.add_argument_group("data")
    _table_columns(data, labels=False)
    method = sub.add_argument_group("features")
    _backbone_options(method)
    method.add_argument("--layer", type=_layer_list, action="extend", metavar="LAYER[,LAYER]",
                        help="layer(s) to read, concatenated in order (repeatable; default: "
                             "penultimate; see `skdeep layers NAME`)")
    method.add_argument("--pooling", type=_pooling, default="avg", metavar=_POOLING_METAVAR,
                        help="how a feature map becomes a vector (default: avg; none flattens)")
    _image_size_option(method)
    method.add_argument("--seed", type=_int_at_least(0), default=None,
                        help="seed of the random initialisation with --weights none")
    runtime = sub.add_argument_group("runtime")
    _runtime_options(runtime)
    runtime.add_argument("--overwrite", action="store_true",
                         help="start afresh, ignoring the rows an interrupted run of this command "
                              "left in OUT.partial (default: resume from them)")


def _add_backbones(commands) -> None:
    sub = _command(commands, "backbones", _run_backbones,
                   help="list the network names accepted as --backbone",
                   description="List the backbone names accepted by --backbone (and by "
                               "backbone= in Python), one per line.",
                   epilog="examples:\n  skdeep backbones --source bundled\n"
                          "  skdeep backbones resnet\n  skdeep backbones 'timm/convnext*' --offline\n"
                          "  skdeep backbones 'timm/resnet18*' --tags   # the pretrained tags")
    sub.add_argument("pattern", nargs="?", metavar="PATTERN",
                     help="only names containing PATTERN (case-insensitive; * and ? are wildcards)")
    sub.add_argument("--source", choices=("all", "bundled", "torchvision", "timm"), default="all",
                     help="which family to list (default: all)")
    sub.add_argument("--offline", action="store_true",
                     help="only backbones whose pretrained weights are already on this machine")
    sub.add_argument("--tags", action="store_true",
                     help="list timm models once per set of pretrained weights, with its tag "
                          "(timm/resnet18.a1_in1k, timm/resnet18.tv_in1k...), all accepted by "
                          "--backbone")


def _add_layers(commands) -> None:
    sub = _command(commands, "layers", _run_layers,
                   help="list the layers of a backbone you can read features from",
                   description="List the layer names of a backbone accepted by --layer (and by "
                               "layer= in Python), shallow to deep: the portable names "
                               "penultimate and logits (and pool5/fc6/fc7 for AlexNet and VGG), "
                               "then every module path. Only the architecture is built.",
                   epilog="examples:\n  skdeep layers efficientnet_lite0 --depth 2\n"
                          "  skdeep layers resnet50 --sweep      # the layers `evaluate` compares")
    sub.add_argument("name", metavar="NAME", help="a backbone name (see `skdeep backbones`)")
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--depth", type=_int_at_least(1), metavar="N",
                       help="only module paths with at most N parts (blocks.3 has 2)")
    which.add_argument("--sweep", action="store_true",
                       help="only the layers `skdeep evaluate` compares by default")


def _table_columns(group, *, labels: bool) -> None:
    group.add_argument("--path-column", default="path", metavar="NAME",
                       help="column of image paths when INPUT is a table (default: path)")
    if labels:
        group.add_argument("--label-column", default="label", metavar="NAME",
                           help="column of labels when INPUT is a table (default: label)")


def _image_size_option(group) -> None:
    group.add_argument("--image-size", type=_image_size, default="auto", metavar="N|auto|native",
                       help=f"network input side in pixels (default: auto = {SMALL_IMAGE_INPUT} "
                            f"for images of at most {SMALL_IMAGE_SIDE} px, else native, the "
                            "network's own size; Python's PretrainedCNNFeatures has no auto: "
                            "its image_size=None is native)")


def _backbone_options(group) -> None:
    group.add_argument("--backbone", default=DEFAULT_BACKBONE, metavar="NAME",
                       help=f"network (default: {DEFAULT_BACKBONE}, bundled, works offline); "
                            "see `skdeep backbones`")
    group.add_argument("--weights", type=_weights, default="DEFAULT", metavar="W",
                       help="DEFAULT, a weights name (IMAGENET1K_V1), a .pth/.safetensors file, "
                            "or none for random initialisation (default: DEFAULT)")


_POOLING_METAVAR = "{" + ",".join((*POOLINGS, "none")) + "}"
_COMPILE = {"auto": "auto", "on": True, "off": False}  # --compile -> the compile= parameter


def _runtime_options(group) -> None:
    group.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="N",
                       help="images per forward pass (default: the fastest for the device: "
                            "64 on a GPU, ~400k pixels per batch on a CPU)")
    group.add_argument("--device", type=_device, default="auto",
                       help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps "
                            "(default: auto)")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="compute precision; auto = bf16/fp16 where the hardware has it "
                            "natively, else fp32 (default: auto)")
    group.add_argument("--compile", choices=tuple(_COMPILE), default="auto",
                       help="run the network as one compiled graph (torch.compile; about 2x on "
                            "CPUs, after a compile of seconds): on, off, or auto = when the job "
                            "is large enough to pay for the compile (default: auto); a "
                            "first compile is said in one line on stderr")
    group.add_argument("--workers", type=_workers, default="auto", metavar="N",
                       help="processes decoding images in parallel: a number (0: in-process) "
                            "or auto = 0 on a CPU, one per spare core (at most 8) for files on "
                            "CUDA (default: auto)")
    group.add_argument("--cache", metavar="DIR",
                       help="keep each image's features in DIR and reuse them in later runs")
    group.add_argument("--on-error", choices=ON_ERROR, default="raise",
                       help="an unreadable image: raise (stop, naming it) or nan (NaN row and a "
                            "warning; evaluate leaves it out) (default: raise)")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bars on stderr (default: when stderr is a terminal)")


# --- argument types ----------------------------------------------------------------------------


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else _int_at_least(0)(text)


_workers.__name__ = "integer or auto"

_NO_TTA = "none"


def _tta(text: str) -> str | int:
    """--finetune-tta: a view name, an int >= 2 or "none" (kept as such: None means not given)."""
    if text in (*TTA_NAMES, _NO_TTA):
        return text
    try:
        return _int_at_least(2)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(TTA_NAMES)}, {_NO_TTA} or a number of views >= 2, got {text!r}"
        ) from None


def _jobs(text: str) -> int:
    value = _int_at_least(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive number of processes, or -1")
    return value


def _device(text: str) -> str:
    if text == "auto":
        return text
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _image_size(text: str) -> int | str | None:
    lowered = text.lower()
    if lowered == "native":
        return None
    if lowered == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, 'auto' or 'native', got {text!r}") from None
    if value < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8 pixels, got {value}")
    return value


_image_size.__name__ = "image size"


def _image_sizes(text: str) -> list[int | str | None]:
    """``--image-sizes 96,native``: each entry as ``--image-size`` parses it."""
    return [_image_size(part.strip()) for part in text.split(",")]


_image_sizes.__name__ = "image sizes"


def _threshold(text: str) -> str | float:
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be a cosine distance in [0, 2], got {text}")
    return value


_threshold.__name__ = "threshold"


def _pooling(text: str) -> str | None:
    if text.lower() == "none":
        return None
    if text not in POOLINGS:
        raise argparse.ArgumentTypeError(
            f"invalid choice {text!r} (choose from {', '.join(POOLINGS)}, none)")
    return text


def _weights(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _layer_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty layer name in {text!r}")
    return names


def _output_file(text: str) -> str:
    suffix = Path(text).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text!r} has an unknown extension; use one of {', '.join(OUTPUT_FORMATS)}")
    return text


# --- commands ----------------------------------------------------------------------------------


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    given = {"epochs": args.finetune_epochs, "tta": args.finetune_tta}
    for name, value in given.items():
        if value is not None and not args.finetune:
            raise _UsageError(f"--finetune-{name} needs --finetune")
    finetune_params = {name: value for name, value in given.items() if value is not None}
    if args.finetune_tta == _NO_TTA:
        finetune_params["tta"] = None
    _check_folder(Path(args.output), Path(args.output))
    _warn_if_inside_input(Path(args.output), args.input)
    X, y, source = _labelled_input(args)
    progress = _progress(args)
    print(f"Evaluating {source} ...", file=sys.stderr, flush=True)
    result = evaluate(
        X, y, backbone=args.backbone, weights=args.weights, layers=args.layers,
        image_size=args.image_size, image_sizes=args.image_sizes, pairs=args.pairs,
        pooling=args.pooling, cv=args.folds, duplicates=args.duplicates, finetune=args.finetune,
        finetune_params=finetune_params or None, calibrate=args.calibrate,
        max_images=args.max_images, C=args.C,
        max_iter=args.max_iter, batch_size=args.batch_size, device=args.device,
        precision=args.precision, num_workers=args.workers, on_error=args.on_error,
        cache=args.cache, random_state=args.seed, n_jobs=args.jobs, progress=progress,
        compile=_COMPILE[args.compile], explain=args.explain,
        verbose=1,
    )
    print()
    print(result.summary(), flush=True)
    written = result.save(args.output, embedding_map=args.map)
    folder = Path(args.output)
    names = ", ".join(path.name for path in written)
    print(f"\nReport written to {folder}{os.sep} ({names})", flush=True)
    return EXIT_OK


def _run_audit(args: argparse.Namespace) -> int:
    from ._inputs import auto_image_size
    from .data_audit import audit
    from .features import PretrainedCNNFeatures

    if args.label_column is not None and not args.labels:
        raise _UsageError("--label-column and --no-labels contradict each other")
    _check_folder(Path(args.output), Path(args.output))
    _warn_if_inside_input(Path(args.output), args.input)
    X, y, source = _audit_input(args)
    progress = _progress(args)
    # The rule of `skdeep evaluate` and `extract` too: the same images, the same input size.
    size = auto_image_size(X) if args.image_size == "auto" else args.image_size
    cnn = PretrainedCNNFeatures(
        backbone=args.backbone, weights=args.weights, layer=args.layer or ["penultimate"],
        image_size=size, batch_size=args.batch_size, device=args.device,
        precision=args.precision, num_workers=args.workers, on_error=args.on_error,
        cache=args.cache, progress=progress, random_state=args.seed,
        compile=_COMPILE[args.compile],
    ).fit()  # bad backbone or layer names fail before any image is read
    print(f"Auditing {source}{'' if y is not None else ' (without labels)'} with "
          f"{cnn.backbone_.name} at {cnn.data_config_['input_size'][-1]} px ...",
          file=sys.stderr, flush=True)
    report = audit(X, y, estimator=cnn, cv=args.folds, threshold=args.threshold,
                   random_state=args.seed, on_error=args.on_error, progress=progress)
    print(report.describe(top=10), flush=True)
    written = report.plot(args.output)
    names = ", ".join(path.name for path in written)
    print(f"\nAudit written to {Path(args.output)}{os.sep} ({names})", flush=True)
    return EXIT_OK


def _run_extract(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from ._inputs import auto_image_size
    from ._outputs import ResumableOutput, input_fingerprint
    from .features import PretrainedCNNFeatures

    paths, files = _unlabelled_input(args)
    target = Path(args.output)
    _check_output(target, paths)
    _check_not_an_input(target, [args.input, *files])
    layers = args.layer or ["penultimate"]
    # The rule of `skdeep evaluate` too: the same images get the same input size in both.
    size = auto_image_size(files) if args.image_size == "auto" else args.image_size
    cnn = PretrainedCNNFeatures(
        backbone=args.backbone, weights=args.weights, layer=layers, pooling=args.pooling,
        image_size=size, batch_size=args.batch_size, device=args.device,
        precision=args.precision, num_workers=args.workers, on_error=args.on_error,
        cache=args.cache, progress=_progress(args), random_state=args.seed,
        compile=_COMPILE[args.compile],
    )
    cnn.fit()  # resolves the backbone and the layers: bad names fail before any message
    columns = [str(name) for name in cnn.get_feature_names_out()]
    # What the rows are: a partial output is resumed only by a run computing the same rows.
    job = {"inputs": input_fingerprint(paths, files), "layers": cnn.layers_,
           "architecture": cnn.backbone_.architecture_id, "weights": cnn.backbone_.weights_id,
           "preprocessing": cnn.data_config_, "precision": cnn.precision_,
           "pooling": args.pooling, "on_error": args.on_error}
    target.parent.mkdir(parents=True, exist_ok=True)
    output = ResumableOutput(target, paths, columns, job, _paths_line)
    # Unseeded random weights differ at every run: their rows cannot be continued.
    reused, note = output.start(overwrite=args.overwrite or cnn.backbone_.weights_id is None)
    try:
        if note:
            print(f"skdeep: {note}", file=sys.stderr)
        if reused:
            print(f"Resuming: {reused} of {len(paths)} row(s) reused from {output.partial}",
                  file=sys.stderr, flush=True)
        todo = len(paths) - reused
        print(f"Embedding {todo} image(s) with {cnn.backbone_.name} at "
              f"{cnn.data_config_['input_size'][-1]} px, layer(s) {', '.join(layers)} ...",
              file=sys.stderr, flush=True)
        if todo:
            # Rows keep their numbers in messages when resuming: the index is the row.
            X = (np.asarray(files, dtype=object) if not reused else
                 pd.Series(files[reused:], index=range(reused, len(files)), dtype=object))
            for rows in cnn.iter_transform(X):
                output.write(rows)
        written = output.finish(cnn.provenance_)
    except KeyboardInterrupt:
        kept = output.rows_done
        _release(output)
        if not kept:
            raise
        raise _Interrupted(f"{kept} of {len(paths)} row(s) are kept in {output.partial}: run "
                           "the same command again to resume") from None
    except BaseException:
        _release(output)
        raise
    note = f" ({output.nan_rows} unreadable image(s) are NaN rows)" if output.nan_rows else ""
    print(f"Wrote {len(paths)} x {len(columns)} features to "
          f"{' and '.join(map(str, written))}{note}", file=sys.stderr)
    return EXIT_OK


def _release(output) -> None:
    """After a failure: keep a partial output holding rows (to resume), remove an empty one."""
    if output.rows_done:
        output.close()
    else:
        output.discard()


def _run_backbones(args: argparse.Namespace) -> int:
    import fnmatch

    from .backbones import list_backbones

    def matching(names: list[str]) -> list[str]:
        if not args.pattern:
            return names
        pattern = args.pattern.lower()
        if not any(char in pattern for char in "*?["):
            pattern = f"*{pattern}*"
        return [name for name in names if fnmatch.fnmatchcase(name.lower(), pattern)]

    names = matching(list_backbones(args.source, available_offline=args.offline, tags=args.tags))
    if not names and (args.pattern or args.offline):
        family = f"{args.source} backbone" if args.source != "all" else "backbone"
        # Offline, say whether the name is wrong or only the weights are missing: other fixes.
        known = matching(list_backbones(args.source, tags=args.tags)) if args.offline else []
        if not known:
            raise ValueError(f"no {family} matches {args.pattern!r}" if args.pattern else
                             f"no {family} has its pretrained weights on this machine")
        from ._inputs import preview

        which = (f"{len(known)} {family}(s) match {args.pattern!r}" if args.pattern
                 else f"{len(known)} {family}(s) are known")
        raise ValueError(
            f"{which} ({preview(known, 5)}), but none has its pretrained weights on this "
            "machine: run one once with a network connection (its weights are then cached), or "
            "bring them as the Offline use guide says; without --offline, `skdeep backbones` "
            "lists them all")
    _print_lines(names)
    return EXIT_OK


def _run_layers(args: argparse.Namespace) -> int:
    from .backbones import list_layers
    from .evaluation import layer_sweep

    if args.sweep:
        names = layer_sweep(args.name)
    else:
        names = list_layers(args.name)
        if args.depth is not None:
            portable = {"penultimate", "logits", "pool5", "fc6", "fc7"}
            names = [name for name in names
                     if name in portable or name.count(".") < args.depth]
    _print_lines(names)
    return EXIT_OK


# --- inputs and outputs ------------------------------------------------------------------------


def _labelled_input(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """INPUT of evaluate -> (X, y, description)."""
    from .datasets import RESOLVED_PATH_COLUMN, load_fashion_sample, load_image_folder, read_image_table

    if args.input is None:
        sample = load_fashion_sample()
        import pandas as pd

        names = pd.Categorical.from_codes(sample.target, categories=list(sample.target_names))
        return sample.images, names, "the bundled Fashion-MNIST sample (1,000 images, 10 classes)"
    if os.path.isdir(args.input):
        frame = load_image_folder(args.input)
        return (frame["path"].tolist(), frame["label"].to_numpy(),
                f"{len(frame)} images in {frame['label'].nunique()} class folders of {args.input}")
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"INPUT not found: {args.input!r}")
    table = read_image_table(args.input, path_column=args.path_column,
                              label_column=args.label_column)
    return (table[RESOLVED_PATH_COLUMN].tolist(), table[args.label_column].to_numpy(),
            f"{len(table)} images listed in {args.input}")


def _audit_input(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """INPUT of audit -> (X, y or None, description): labelled when the input has labels."""
    from .datasets import RESOLVED_PATH_COLUMN, find_images, read_image_table

    if args.input is None or (os.path.isdir(args.input) and args.labels
                              and _has_subfolders(args.input)):
        X, y, source = _labelled_input(args)
        return X, (y if args.labels else None), source
    if os.path.isdir(args.input):
        paths = find_images(args.input)
        if not paths:
            raise ValueError(f"no image files under {args.input!r} (looked for "
                             "png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm, pgm, pbm)")
        return paths, None, f"{len(paths)} images in {args.input}"
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"INPUT not found: {args.input!r}")
    if args.labels:
        column = args.label_column or "label"
        try:
            table = read_image_table(args.input, path_column=args.path_column,
                                     label_column=column)
            return (table[RESOLVED_PATH_COLUMN].tolist(), table[column].to_numpy(),
                    f"{len(table)} images listed in {args.input}")
        except ValueError as exc:
            if args.label_column is not None or f"has no column {column!r}" not in str(exc):
                raise
    table = read_image_table(args.input, path_column=args.path_column)
    return (table[RESOLVED_PATH_COLUMN].tolist(), None,
            f"{len(table)} images listed in {args.input}")


def _has_subfolders(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(entry.is_dir() and not entry.name.startswith(".") for entry in entries)


def _unlabelled_input(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """INPUT of extract -> (index paths, files to open)."""
    from .datasets import RESOLVED_PATH_COLUMN, find_images, read_image_table

    if os.path.isdir(args.input):
        paths = find_images(args.input)
        if not paths:
            raise ValueError(f"no image files under {args.input!r} (looked for "
                             "png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm, pgm, pbm)")
        return paths, paths
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"INPUT not found: {args.input!r}")
    table = read_image_table(args.input, path_column=args.path_column)
    return table[args.path_column].astype(str).tolist(), table[RESOLVED_PATH_COLUMN].tolist()


def _check_output(target: Path, paths: list[str]) -> None:
    """Fail now, not after the work, if ``target`` cannot be written or cannot hold ``paths``."""
    from ._outputs import output_files

    for path in output_files(target):
        if path.is_dir():
            raise IsADirectoryError(f"cannot write {path}: it is a folder; choose another OUT")
    _check_folder(target.parent, target)
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ImportError("writing .parquet needs pyarrow: pip install pyarrow "
                              "(or write .csv / .npy)") from exc
    if suffix != ".npy":  # tables hold text as UTF-8; the .npy sidecar escapes any path
        for row, path in enumerate(paths):
            if not _is_utf8(path):
                raise ValueError(
                    f"cannot write {target}: the path of row {row}, {path!r}, is not valid UTF-8 "
                    f"(a file name in another encoding), which a {suffix} file cannot hold; "
                    "rename the file, or write .npy, whose .paths.txt keeps any path")


def _check_not_an_input(target: Path, inputs: Sequence[str]) -> None:
    """Fail now if writing ``target`` would replace or truncate one of the job's ``inputs``.

    ``skdeep extract index.csv -o index.csv`` would otherwise replace the table, labels and all,
    with the features. Compared as :func:`os.path.samefile` does (device and inode, through
    links), and only when one of the output's files already exists: a new output is no input, so
    the common run stats nothing more.
    """
    from ._outputs import files_written

    existing = {}
    for path in files_written(target):
        try:
            status = os.stat(path)
        except (OSError, ValueError):  # not there (yet): it cannot be an input
            continue
        existing[(status.st_dev, status.st_ino)] = path
    if not existing:
        return
    for source in inputs:
        try:
            status = os.stat(source)
        except (OSError, ValueError):  # a missing image: the job reports it later
            continue
        written = existing.get((status.st_dev, status.st_ino))
        if written is not None:
            which = "it" if written == target else f"its file {written}"
            raise ValueError(f"cannot write {target}: {which} is the input {source} (the same "
                             "file); writing would destroy the input: choose another OUT")


def _warn_if_inside_input(report: Path, source: str | None) -> None:
    """A report folder inside the INPUT folder is skipped by skdeep (it carries the output
    marker), but other tools would read its plots as images: say so, once."""
    if source is None or not os.path.isdir(source):
        return
    inside = Path(os.path.realpath(report)).is_relative_to(os.path.realpath(source))
    if inside:
        warnings.warn(f"the report folder {str(report)!r} lies inside INPUT {source!r}: skdeep "
                      "marks it and never reads it as images, but other tools would; give -o a "
                      "folder outside INPUT", UserWarning, stacklevel=2)


def _check_folder(folder: Path, output: Path) -> None:
    """Fail now, not after the work, if files cannot be created in ``folder`` (made if missing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:  # where they would be made
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {output}: {existing} is a file, not a folder; "
                                 "choose another output")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise type(exc)(f"cannot write {output}: no file can be created in {existing} "
                        f"({exc.strerror or exc}); choose another output folder") from exc


def _paths_line(path: str) -> str:
    # Line i is row i, always: a path that is not one plain line of UTF-8 text is written as a
    # JSON string (ASCII, line breaks and undecodable bytes escaped), and so is one starting
    # with a quote, which would otherwise read as JSON.
    if path.splitlines() == [path] and not path.startswith('"') and _is_utf8(path):
        return path
    return json.dumps(path)


def read_paths(path: str | os.PathLike) -> list[str]:
    """The image paths written by ``skdeep extract -o OUT.npy`` to ``OUT.paths.txt``, row by row.

    Line ``i`` holds the path of row ``i``: as written when it is one plain line of UTF-8, else as
    a JSON string (a path with a line break, starting with ``"``, or not valid UTF-8).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.paths.txt`` file.

    Returns
    -------
    list of str
        One path per row of the matrix. A file name that is not valid UTF-8 comes back as
        :func:`os.fsdecode` gives it (undecodable bytes as surrogates, e.g. ``"\\udcff"``):
        ``open`` accepts it, and :func:`os.fsencode` returns its bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.cli import read_paths
    >>> features = np.load("features.npy")  # doctest: +SKIP
    >>> paths = read_paths("features.paths.txt")  # doctest: +SKIP
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) if line.startswith('"') else line for line in lines]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name in another encoding, as os.fsdecode gives it
        return False
    return True


# --- Python words -> flag words -----------------------------------------------------------------

#: The parameters of the estimators and of evaluate that the command sets, with their flag. The
#: messages of the library name parameters (``on_error='nan'``); the command shows them as flags.
PARAMETER_FLAGS = {
    "backbone": "--backbone",
    "weights": "--weights",
    "layer": "--layer",
    "layers": "--layers",
    "pooling": "--pooling",
    "image_size": "--image-size",
    "batch_size": "--batch-size",
    "device": "--device",
    "precision": "--precision",
    "num_workers": "--workers",
    "on_error": "--on-error",
    "cache": "--cache",
    "random_state": "--seed",
    "compile": "--compile",
    "cv": "--folds",
    "duplicates": "--duplicates",
    "threshold": "--threshold",
    "max_images": "--max-images",
}
#: The library's functions the messages point at, and the command that shows the same.
FUNCTION_COMMANDS = {
    "skdeep.list_backbones()": "`skdeep backbones`",
    "skdeep.list_layers(backbone)": "`skdeep layers BACKBONE`",
    "skdeep.list_layers()": "`skdeep layers BACKBONE`",
    "y=None": "--no-labels",  # audit without labels
}
_VALUE = r"""'[^']*'|"[^"]*"|[\w+-]+(?:\.[\w+-]+)*"""  # not a sentence's full stop
_PARAMETER = re.compile(r"(?<![\w.])(" + "|".join(PARAMETER_FLAGS) + r")=(" + _VALUE + ")")
# compile=True/False is --compile on/off; None (weights=None...) is written none.
_FLAG_VALUES = {"None": "none", "True": "on", "False": "off"}


def in_flags(message: str) -> str:
    """``message`` with the Python it names in the words of the command line.

    ``on_error='nan'`` becomes ``--on-error nan``, ``weights=None`` ``--weights none``, and
    ``skdeep.list_backbones()`` ``skdeep backbones``: an error raised by the library reads, on the
    command line, as advice the user can type. The two tables above are the whole mapping.

    Parameters
    ----------
    message : str
        An error or warning message of the library.

    Returns
    -------
    str

    Examples
    --------
    >>> from skdeep.cli import in_flags
    >>> in_flags("row 3 cannot be read (on_error='nan' gives such rows NaN instead)")
    'row 3 cannot be read (--on-error nan gives such rows NaN instead)'
    >>> in_flags("Unknown backbone 'resnet1800'. skdeep.list_backbones() lists the names")
    "Unknown backbone 'resnet1800'. `skdeep backbones` lists the names"
    """
    for function, command in FUNCTION_COMMANDS.items():
        message = message.replace(function, command)
    return _PARAMETER.sub(_as_flag, message)


def _as_flag(match: re.Match) -> str:
    value = match.group(2)
    if value[0] in "'\"" and not any(char.isspace() for char in value[1:-1]):
        value = value[1:-1]  # a quoted word reads unquoted on a command line
    return f"{PARAMETER_FLAGS[match.group(1)]} {_FLAG_VALUES.get(value, value)}"


# --- small helpers -----------------------------------------------------------------------------


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _print_lines(lines: Sequence[str]) -> None:
    try:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:  # `skdeep backbones | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from ._inputs import BadImageWarning  # loaded already: only the work warns

    if isinstance(message, BadImageWarning) and message.reasons:
        # The summary of the unreadable files: its first line, then one line per file.
        lines = [str(message).splitlines()[0], *(f"  {_one_line(r)}" for r in message.reasons)]
    else:
        lines = [_one_line(message)]
    print("skdeep: warning: " + "\n".join(map(in_flags, lines)), file=sys.stderr)


def _one_line(exc: BaseException | Warning | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):  # str(KeyError) is the repr of its key
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def _exit_code(code: Any) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_FAILURE


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns - 2
