"""FineTunedCNNClassifier: a pretrained CNN fine-tuned on your images, as a scikit-learn classifier."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import warnings
from numbers import Integral, Real
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import Subset

from . import _safe_format
from ._augment import describe, train_transform, tta_views
from ._base import (
    COMMON_PARAMETER_CONSTRAINTS,
    VIEW_PARAMETER_CONSTRAINTS,
    CNNEstimatorMixin,
    seed_of,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from ._defaults import DEFAULT_BACKBONE, HEAD_INITS, SAMPLERS, TTA_NAMES
from ._inference import predict_rows
from ._inputs import preview, warn_bad_rows
from ._layers import LOGITS, PENULTIMATE, FeatureExtractor, feature_names
from ._averaging import WeightAverage
from ._mixing import batch_mixer
from ._optim import (
    OPTIMIZERS,
    SCHEDULERS,
    LRSchedule,
    budget_epochs,
    make_optimizer,
    param_groups,
)
from ._provenance import provenance
from ._trainable_layers import (
    BN_MODES,
    TrainableLayer,
    find_head,
    replace_head,
    resolve_bn_mode,
    set_train_modes,
    set_trainable,
    trainable_layers,
    trained_layers,
)
from ._training import (
    EarlyStopping,
    Run,
    Stage,
    Trainer,
    make_scaler,
    read_training_state,
    restore_training_state,
    run_epochs,
    seeded_rngs,
    training_data,
    write_training_state,
)
from ._values import plain
from ._version import __version__
from .backbones import freeze, resolve_backbone
from .calibration import CALIBRATIONS, check_calibration, fit_temperature
from .cache import image_keys
from .callbacks import HOOKS, latest_checkpoint
from .probing import affine_scores, linear_probe
from .recipes import RECIPE_PARAMETERS, RECIPES, recipe_params


class FineTunedCNNClassifier(CNNEstimatorMixin, ClassifierMixin, TransformerMixin, BaseEstimator):
    """Fine-tune a pretrained CNN on labelled images: transfer learning as a scikit-learn classifier.

    The network's ImageNet classifier is replaced by a new linear layer with one output per
    class, then the network is trained on ``(X, y)``: the whole of it (``train_layers="all"``),
    only the new head on top of the frozen network (``"head"``, a fixed feature extractor), or
    the last ``k`` blocks plus the head. Pretrained layers learn more slowly than the new head
    (discriminative learning rates). Training holds out a stratified validation set, stops early
    when the validation loss stops improving and keeps the best epoch's weights.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Network to fine-tune: a name from :func:`skdeep.list_backbones` or a module instance whose
        last layer is an ``nn.Linear`` (a small CNN of your own works too). The default's ImageNet
        weights ship with skdeep and work offline.
    weights : "DEFAULT", str, torchvision WeightsEnum, path or None, default="DEFAULT"
        Pretrained weights, as for :class:`~skdeep.PretrainedCNNFeatures`. ``None`` trains the
        architecture from scratch (random initialisation seeded by ``random_state``); then every
        layer learns at ``lr`` and ``backbone_lr_mult`` is ignored.
    image_size : int, default=None
        Side of the square network input; ``None`` uses the weights' own size (224 for most).
        Smaller is much faster: 64-128 suits 28-32 px images such as Fashion-MNIST or CIFAR-10.
    train_layers : "all", "head" or int, default="all"
        What trains. ``"all"``: the whole network. ``"head"``: only the new classifier. An int
        ``k``: the last ``k`` layers of the network plus the head (``0`` is ``"head"``). The layers
        that count are the stem, each stage (timm ``blocks.*``/``stages.*``, torchvision
        ``layer1``..``layer4``, each layer of VGG/AlexNet ``features``...) and the neck between
        the last stage and the head; ``trainable_layers_`` lists them after fitting. Frozen parts
        keep their weights and run in eval mode, so their BatchNorm running statistics do not
        change.
    bn_mode : {"auto", "train", "frozen"}, default="auto"
        BatchNorm in the trained layers: ``"train"`` normalises with batch statistics and updates
        the running ones; ``"frozen"`` keeps the pretrained running statistics (in inference mode,
        as Keras recommends for fine-tuning; scale and shift still learn). ``"auto"`` is
        ``"frozen"`` for a network whose BatchNorm statistics were learnt (pretrained weights) and
        ``"train"`` for a randomly initialised one. On 1,600 Fashion-MNIST images, frozen
        statistics learn several times faster than batch statistics from the same weights.
    dropout : float, default=0.2
        Dropout rate before the new linear head.
    lr : float, default=1e-3
        Peak learning rate of the new head.
    backbone_lr_mult : float, default=0.1
        Learning rate of pretrained layers relative to ``lr`` (the rule of thumb: a tenth).
    layer_decay : float in (0, 1], default=None
        Further multiplies the learning rate by this factor per layer of depth below the deepest
        layer, so that early, generic layers move least. With ``layer_decay=0.75`` the 9 layers of
        EfficientNet-Lite0 learn at 1/10 of ``lr`` (the neck) down to about 1/100 (the stem).
    optimizer : {"adamw", "sgd", "adam", "rmsprop", "adagrad"}, default="adamw"
        ``"sgd"`` uses momentum 0.9.
    nesterov : bool, default=False
        Nesterov momentum for ``optimizer="sgd"``.
    weight_decay : float, default=0.01
        Weight decay of weights (never of biases and normalisation parameters); decoupled for
        AdamW, L2 for the others.
    scheduler : {"cosine", "step", "onecycle", "plateau"} or None, default="cosine"
        Learning-rate schedule: cosine annealing to 0 over all epochs; x0.1 every 7 epochs (the
        PyTorch transfer-learning tutorial's); one-cycle; x0.1 after 2 epochs without improvement
        of the validation loss (training loss without validation); constant.
    warmup_epochs : float, default=0
        Linear warm-up of the learning rate over that many epochs (the rising phase for one-cycle).
    epochs : int, default=10
        Maximum number of passes over the training images (after the ``freeze_epochs``).
    freeze_epochs : int, default=0
        Staged fine-tuning ("head first"): train only the new head for this many epochs, with
        the rest of the network frozen, then the layers chosen by ``train_layers`` for
        ``epochs`` epochs with the discriminative rates, each stage with its own optimizer and
        ``scheduler``. The head epochs count in ``n_iter_`` and ``history_`` (epochs 1 to
        ``freeze_epochs`` of a fit). Early stopping does not stop the head stage; its patience
        restarts when the layers start to train. Measured on two grayscale data sets (see the
        guide "Images unlike ImageNet"): a large gain when the budget is one epoch, none
        reliable at four, hence the default 0.
    max_steps : int, "auto" or None, default="auto"
        A budget of optimisation steps: training runs the fewest whole epochs whose batches
        reach it, and ``scheduler`` and ``warmup_epochs`` span those epochs. ``"auto"``:
        ``epochs`` epochs when they make at least 400 steps, else enough epochs for 400. A set
        of 500 images has 15 batches of 32 per epoch, so 10 epochs are 150 steps: too few to
        move a pretrained network. On 400-500 images (Fashion-MNIST, MNIST digits, an
        imbalanced set) ``"auto"`` gained 1.7 to 8.7 points of balanced accuracy over 10 epochs,
        for 1.2 to 3 times the fit time (the user guide "Images unlike ImageNet"); sets of
        about 1,400 images and more train for ``epochs`` as before. ``None``: ``epochs`` epochs
        whatever the size (the recipe ``"fast"``).
    head_init : {"random", "probe"}, default="random"
        How the new head starts. ``"random"``: PyTorch's default initialisation. ``"probe"``:
        the weights of a linear probe (:func:`skdeep.probing.linear_probe`, as
        :func:`~skdeep.evaluate` fits it) on the frozen network's penultimate features of the
        training images, scaler folded in, so that training starts from the probe's decisions
        (linear probing then fine-tuning, LP-FT: a random head's large early gradients distort
        the pretrained features; Kumar et al., 2022). Costs one forward pass over the training
        images (at most 20,000 of them, stratified). Not used by ``warm_start`` or ``resume``,
        which continue a trained head. It gained on one small set and lost on two (the
        recipe ``"lp-ft"``, which ``skdeep evaluate --finetune`` compares on your images).
    batch_size : int, default=32
        Images per optimisation step (and per forward pass at prediction).
    augment : {"natural", "symmetric", "light"}, bool or callable, default=True
        Train-time augmentation policy, derived from the weights' data config (input size,
        interpolation). ``"natural"`` (``True``): random-resized-crop (8 % to 100 % of the area)
        and horizontal flip, for photos of objects. ``"symmetric"``: both flips, 90-degree
        rotations and a mild crop (60 % to 100 %), for images without an up direction
        (microscopy, satellite tiles, textures). ``"light"``: the mild crop alone, for images
        whose orientation matters (digits, text, documents, X-rays). ``False``: none. A callable
        (a torchvision v2 transform, for example) receives each training image as a ``uint8``
        tensor (C, H, W) after the evaluation resize and centre crop, and returns an image of
        the same shape. Evaluation always uses the deterministic resize and centre crop.
    tta : None, "flip", "symmetric" or int, default=None
        Test-time augmentation of :meth:`predict`, :meth:`predict_proba`,
        :meth:`predict_log_proba`, :meth:`decision_function` and :meth:`transform`: the network
        runs on several views of each image (one batched forward pass per view, the views made
        on the device from the decoded batch) and the outputs are averaged. ``"flip"``: the image
        and its mirror image; ``"symmetric"``: the 8 rotations and reflections of the square; an
        int ``n``: the image and ``n - 1`` random views of the ``augment`` policy (seeded by
        ``random_state``). Probabilities are averaged (not logits): ``predict_proba`` is the mean
        of the views' probabilities, ``decision_function`` and ``predict_log_proba`` its
        logarithm, ``predict`` its most probable class; ``transform`` averages the embeddings.
        Prediction costs one forward pass per view. Only prediction reads it: it may be set
        after fitting.
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss.
    mixup : float, default=0.0
        Mixup (Zhang et al., 2018): train on convex combinations of pairs of images of a batch
        and of their labels, the weight of each pair drawn from ``Beta(mixup, mixup)``
        (torchvision's ``v2.MixUp``; 0.2 to 1.0 are usual). 0: off.
    cutmix : float, default=0.0
        CutMix (Yun et al., 2019): paste a box of one image of the batch into another and mix
        their labels by its area, ``Beta(cutmix, cutmix)`` (torchvision's ``v2.CutMix``; 1.0 is
        usual). 0: off. With both, each batch takes one of the two at random. Both were chosen
        for ImageNet-sized data: off by default (see the user guide for what they measured).
    drop_path_rate : float, default=0.0
        Stochastic depth while training (timm's ``drop_path_rate``: residual branches dropped,
        more often deeper in the network, up to this rate); timm networks only.
    grad_clip_norm : float, default=None
        Clip the gradients' global norm to this value.
    validation_fraction : float, default=0.1
        Fraction of the images held out (stratified) to monitor the validation loss and accuracy;
        0 trains on everything (and disables early stopping). When the images are too few for a
        stratified split (fewer held-out images than classes, or a class of one image), fit
        trains on all of them without validation or early stopping, and one warning says so.
    early_stopping : bool, default=True
        Stop when the validation loss has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and restore the weights of the best epoch.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    tol : float, default=1e-4
        Minimum decrease of the validation loss that counts as an improvement.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss (``{label: weight}``), or ``"balanced"`` for weights
        inversely proportional to class frequencies in the training part.
    sampler : {"shuffle", "balanced"}, default="shuffle"
        The order of training images: each image once per epoch in random order, or
        ``"balanced"``: as many draws per epoch as training images, with replacement, every
        class equally likely (the images of a rare class are repeated, under the augmentation).
        ``class_weight="balanced"`` reweights the loss instead: the rare class's few images
        take larger steps, while balanced sampling takes more steps with them. On a set of
        400 images at 60/25/10/5 % neither helped (the user guide "Images unlike ImageNet").
    ema : float in (0, 1) or None, default=None
        Keep an exponential moving average of the weights, with this decay per optimisation
        step (warmed up as timm does: ``min(ema, (1 + t) / (10 + t))`` at step ``t``), and use
        it for validation, early stopping and the fitted network: the model saved, predicted
        with and calibrated is the average. ``0.99`` suits a few hundred steps; ``None``: the
        last (or best) epoch's weights.
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Mixed-precision training and inference (autocast); fp16 adds a gradient scaler. ``"auto"``
        is bf16 (or fp16) on CUDA, bf16 on CPUs that compute it natively, else fp32.
    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode and augment images in parallel with training.
        ``"auto"``: 0 on a CPU (workers would take its cores from the network); on CUDA one
        per spare core, at most 8 (and 0 to predict on images already in memory).
    on_error : {"raise", "nan"}, default="raise"
        Unreadable images: raise an error naming the row and path, or skip them in training and
        give NaN probabilities at prediction, with a warning naming them; ``bad_rows_`` lists
        their rows (see :meth:`predict` for their labels).
    progress : bool, default=False
        Progress bars over batches.
    verbose : int, default=1
        Print, on stdout, what will train (epochs, batches, images) and then one line per epoch
        (losses, validation accuracy, learning rate, seconds), as skorch's epoch table does: a
        fit takes minutes on a CPU. ``verbose=0`` is silent; ``history_`` holds the same figures.
    random_state : int, RandomState instance or None, default=None
        Seeds the new head, random initialisation, the validation split, shuffling, dropout and
        augmentation. With an int, two fits on the same machine give identical predictions.
    warm_start : bool, default=False
        Continue training the fitted network for ``epochs`` more epochs instead of starting anew
        (with a new optimizer and schedule, and the current ``train_layers``: train the head first,
        then set ``train_layers="all"`` and fit again). ``y`` must have the same classes.
    compile : {"auto"} or bool, default="auto"
        Run prediction and :meth:`transform` through the fine-tuned network compiled to one
        graph (``torch.compile``; see :class:`PretrainedCNNFeatures` and the performance guide).
        ``"auto"`` compiles only when the images of a call are enough to pay for the compile
        time; ``True`` always, ``False`` never. Training itself runs eager. Outputs agree with
        eager to floating-point rounding; if compiling fails, a warning says so and prediction
        runs eager.
    callbacks : list of callback objects, default=None
        Objects with any of the methods ``on_train_begin(estimator)``,
        ``on_epoch_end(estimator, record) -> bool`` (``True`` stops training) and
        ``on_train_end(estimator)``, called in order by :meth:`fit`, for example
        :class:`~skdeep.Checkpoint` and :class:`~skdeep.CSVLogger`. During
        ``on_epoch_end``, ``history_`` ends with ``record`` and the network holds that epoch's
        weights. Callbacks are parameters: :func:`~sklearn.base.clone` (and so grid searches)
        clone them; a fit updates the instances it is given. They are not saved by :meth:`save`.
    calibration : {"auto", "temperature"} or None, default=None
        Calibrate the probabilities after training: one temperature ``T``, fitted on the
        validation split by minimising the negative log-likelihood of its logits, divides the
        logits of :meth:`predict_proba`, :meth:`predict_log_proba` and
        :meth:`decision_function` (:func:`skdeep.calibration.fit_temperature`; Guo et al.,
        2017). :meth:`predict` is unchanged (dividing by ``T > 0`` keeps the argmax). Under
        ``tta`` the temperature divides the log of the averaged probabilities. ``"auto"``
        calibrates when there is a validation split; without one (``validation_fraction=0``, or
        images too few to split) it warns and leaves ``temperature_ = 1.0``. ``"temperature"``
        refuses to fit without a validation split (a ``ValueError`` before training). ``None``:
        the network's own probabilities: the default, because ``benchmarks/bench_calibration.py``
        measured no reliable gain with the 50-image validation split of 500 training images
        (see the user guide "Calibrated probabilities and conformal prediction sets").
    recipe : {"lp-ft", "fast"} or None, default=None
        A named combination of ``head_init``, ``max_steps``, ``ema`` and ``sampler``
        (:mod:`skdeep.recipes`), each measured by ``benchmarks/bench_transfer.py --recipes``:
        the recipe gives the value of each of those parameters left at its default; a value
        given explicitly wins. ``"lp-ft"``: ``head_init="probe"`` and ``ema=0.99``;
        ``"fast"``: ``max_steps=None``. ``recipe_params_`` says what a fit used.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted; ``predict`` returns them and ``predict_proba`` columns follow them.
    n_classes_ : int
    backbone_ : skdeep.backbones.Backbone
        The resolved backbone.
    model_ : torch.nn.Module
        The fine-tuned network (eval mode) on ``device_``; rebuilt on first use after unpickling.
    head_ : str
        Module path of the new head (``Sequential(dropout, fc)``) in ``model_``.
    bn_mode_ : {"train", "frozen"}
        The resolved ``bn_mode``.
    trainable_layers_ : list of tuple of str
        The layers that ``train_layers=k`` counts from the end: module paths of each layer.
    trained_layers_ : list of tuple of str
        The layers trained by the last ``fit`` (the head always is).
    recipe_params_ : dict
        The values of ``head_init``, ``max_steps``, ``ema`` and ``sampler`` the last ``fit``
        used (the ``recipe``'s where the parameter was left at its default).
    param_groups_ : list of dict
        The optimizer's parameter groups: ``name``, peak ``lr``, ``weight_decay``, ``n_params``.
    data_config_ : dict
        Preprocessing derived from the weights.
    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_accuracy``,
        ``lr`` (head, at the epoch's start), ``seconds``. ``pd.DataFrame(clf.history_)`` shows it.
    best_epoch_ : int
        The epoch whose weights the model holds.
    n_iter_ : int
        Number of epochs run (in total, with ``warm_start``).
    n_features_out_ : int
        Width of the embeddings returned by :meth:`transform`.
    device_ : torch.device
    precision_ : str
    bad_rows_ : ndarray of int
        Rows of ``X`` that could not be read (``on_error="nan"``) in the last call of
        :meth:`fit` (skipped in training), :meth:`predict`, :meth:`predict_proba`,
        :meth:`predict_log_proba`, :meth:`decision_function` or :meth:`transform`; empty when
        every image was read. ``np.delete(y, clf.bad_rows_)`` leaves the rows that were scored.
    temperature_ : float
        The fitted temperature (1.0 when not calibrated, and during training: a checkpoint
        holds an epoch's uncalibrated network; the end of the fit calibrates).
    provenance_ : dict
        Where the numbers come from, in JSON types: the versions of skdeep, Python, torch,
        torchvision, timm, scikit-learn and numpy; the backbone, its weights id and the SHA-256 of
        the weights file (None without one); the data config; device, precision and compile
        setting; ``fitted_at``, when fit began (ISO 8601, UTC). :meth:`save` keeps it.

    See Also
    --------
    PretrainedCNNFeatures : frozen embeddings for any scikit-learn estimator (a linear probe).

    Notes
    -----
    Threads: torch uses all cores for one fit. Under ``GridSearchCV(n_jobs=k)`` (joblib's loky
    processes), joblib sets ``OMP_NUM_THREADS`` to ``cores // k`` in each worker and torch, started
    fresh there, follows it, so parallel fits do not oversubscribe the CPU. With joblib's
    threading backend, cap torch yourself (``torch.set_num_threads``).

    Sample weights and class weights multiply each image's loss; they are rescaled to mean 1 over
    the training images so that they do not change the effective learning rate.

    A fit interrupted (killed, out of time) after a :class:`~skdeep.Checkpoint` saved
    an epoch continues with ``fit(X, y, resume=dirname)`` and ends with the weights an
    uninterrupted fit would have (with an int ``random_state``, on the same machine).

    The class is also a transformer (:meth:`transform`, :meth:`get_feature_names_out`), so
    ``set_output(transform="pandas")`` gives embeddings as a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import FineTunedCNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    >>> labels = np.array(["cat", "dog"] * 12)
    >>> clf = FineTunedCNNClassifier(image_size=32, epochs=2, random_state=0)
    >>> clf.fit(images, labels).predict(images[:3]).shape
    (3,)
    >>> clf.classes_.tolist()
    ['cat', 'dog']
    >>> clf.predict_proba(images[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        **COMMON_PARAMETER_CONSTRAINTS,
        **VIEW_PARAMETER_CONSTRAINTS,
        "train_layers": [StrOptions({"all", "head"}), Interval(Integral, 0, None, closed="left")],
        "bn_mode": [StrOptions(set(BN_MODES))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_mult": [Interval(Real, 0, None, closed="left")],
        "layer_decay": [Interval(Real, 0, 1, closed="right"), None],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "nesterov": ["boolean"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "scheduler": [StrOptions(set(SCHEDULERS)), None],
        "warmup_epochs": [Interval(Real, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "max_steps": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "head_init": [StrOptions(set(HEAD_INITS))],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "mixup": [Interval(Real, 0, None, closed="left")],
        "cutmix": [Interval(Real, 0, None, closed="left")],
        "drop_path_rate": [Interval(Real, 0, 1, closed="left")],
        "grad_clip_norm": [Interval(Real, 0, None, closed="neither"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "sampler": [StrOptions(set(SAMPLERS))],
        "ema": [Interval(Real, 0, 1, closed="neither"), None],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "callbacks": [list, tuple, None],
        "calibration": [StrOptions(set(CALIBRATIONS)), None],
        "recipe": [StrOptions(set(RECIPES)), None],
    }

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        *,
        weights: Any = "DEFAULT",
        image_size: int | None = None,
        train_layers: str | int = "all",
        bn_mode: str = "auto",
        dropout: float = 0.2,
        lr: float = 1e-3,
        backbone_lr_mult: float = 0.1,
        layer_decay: float | None = None,
        optimizer: str = "adamw",
        nesterov: bool = False,
        weight_decay: float = 0.01,
        scheduler: str | None = "cosine",
        warmup_epochs: float = 0.0,
        epochs: int = 10,
        freeze_epochs: int = 0,
        max_steps: int | str | None = "auto",
        head_init: str = "random",
        batch_size: int = 32,
        augment: bool | str | Callable = True,
        tta: str | int | None = None,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        drop_path_rate: float = 0.0,
        grad_clip_norm: float | None = None,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        class_weight: dict | str | None = None,
        sampler: str = "shuffle",
        ema: float | None = None,
        device: str = "auto",
        precision: str = "auto",
        num_workers: int | str = "auto",
        on_error: str = "raise",
        progress: bool = False,
        verbose: int = 1,
        random_state: Any = None,
        warm_start: bool = False,
        compile: str | bool = "auto",
        callbacks: list | None = None,
        calibration: str | None = None,
        recipe: str | None = None,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.train_layers = train_layers
        self.bn_mode = bn_mode
        self.dropout = dropout
        self.lr = lr
        self.backbone_lr_mult = backbone_lr_mult
        self.layer_decay = layer_decay
        self.optimizer = optimizer
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.freeze_epochs = freeze_epochs
        self.max_steps = max_steps
        self.head_init = head_init
        self.batch_size = batch_size
        self.augment = augment
        self.tta = tta
        self.label_smoothing = label_smoothing
        self.mixup = mixup
        self.cutmix = cutmix
        self.drop_path_rate = drop_path_rate
        self.grad_clip_norm = grad_clip_norm
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.class_weight = class_weight
        self.sampler = sampler
        self.ema = ema
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.on_error = on_error
        self.progress = progress
        self.verbose = verbose
        self.random_state = random_state
        self.warm_start = warm_start
        self.compile = compile
        self.callbacks = callbacks
        self.calibration = calibration
        self.recipe = recipe

    # --- fitting -------------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None, *,
            resume: str | os.PathLike | None = None) -> FineTunedCNNClassifier:
        """Fine-tune the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of images or of image paths
            As for :meth:`PretrainedCNNFeatures.transform`: an ``(N, H, W[, C])`` array, an
            ``(N, C, H, W)`` tensor, or a sequence of paths, bytes, PIL images or arrays.
        y : array-like of shape (n_samples,)
            Labels of any type (str, int, pandas categorical...), at least two classes.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each image in the loss.
        resume : str or path-like, default=None
            Continue an interrupted fit from the latest checkpoint that
            :class:`~skdeep.Checkpoint` wrote to this folder (or from one checkpoint
            folder ``<dirname>/epoch-NNNN``), instead of starting anew: the network, the
            optimizer, the schedule, early stopping and the random streams continue where they
            were, so that the fit ends with the weights an uninterrupted one would have. The
            parameters (but callbacks, ``verbose``, ``progress``, ``num_workers``, ``device``,
            ``compile`` and ``tta``), ``y`` and ``sample_weight`` must be those of the
            interrupted fit, and ``X`` the same images. A staged fit (``freeze_epochs``)
            resumes in the stage it was in. One exception: a larger ``epochs`` extends the fit
            ("train two more epochs" from the checkpoint of a finished fit): the schedule is
            recomputed for the new total and continues from the step reached, the optimizer's
            state is kept (not with ``scheduler="onecycle"``, whose cycle is fixed).

        Returns
        -------
        self : FineTunedCNNClassifier
        """
        labels = _check_labels(y)
        callbacks = self._checked_callbacks()
        checkpoint = None
        if resume is not None:
            checkpoint = _Checkpointed(latest_checkpoint(resume))
            self._check_resumable(checkpoint)
        warm = self.warm_start and hasattr(self, "classes_") and checkpoint is None
        if warm:
            self._check_same_network()
            self._check_same_classes(labels)
        else:
            self._initialise(labels)
        if checkpoint is not None:
            checkpoint.check_classes(self.classes_)
        encoded = LabelEncoder().fit(self.classes_).transform(labels)
        n = len(labels)
        base = self._dataset(X, train=True, targets=np.arange(n))  # checks len(X) == n
        seed = seed_of(self.random_state)
        train_rows, valid_rows = self._split(encoded, seed)
        check_calibration(self.calibration, valid_rows is not None, self.validation_fraction)
        self._check_readable(base.bad, encoded, train_rows)  # missing files, before any model work
        weights = self._sample_weights(labels, encoded, sample_weight, train_rows)
        fingerprint = _fingerprint(encoded, weights, train_rows, valid_rows)
        images = _ImagesDigest(base.items)
        if checkpoint is not None:
            if fingerprint != checkpoint.document["fingerprint"]:
                raise ValueError(
                    f"resume={os.fspath(resume)!r}: the labels, sample weights or validation "
                    f"split differ from those of the fit saved in {str(checkpoint.folder)!r}; "
                    "resuming needs the same y and sample_weight (and X)."
                )
            saved = checkpoint.document.get("images")  # None: written before it was recorded
            if saved is not None and saved != images():
                raise ValueError(
                    f"resume={os.fspath(resume)!r}: X holds other images than the fit saved in "
                    f"{str(checkpoint.folder)!r} (same labels, but different pixels or files); "
                    "resuming needs the same X, in the same order, or a new fit without resume=."
                )

        with seeded_rngs(seed, self.device_):
            if not warm:
                self._model = self._new_model(len(self.classes_))
                self.bn_mode_ = resolve_bn_mode(self.bn_mode, self._model)
            if checkpoint is not None:
                checkpoint.restore_network(self)
            self._train(base, encoded, weights, train_rows, valid_rows, seed, callbacks,
                        fingerprint, checkpoint, images, warm)
        return self

    def _checked_callbacks(self) -> list[Any]:
        """``callbacks`` as a list, each checked to have at least one hook."""
        callbacks = list(self.callbacks or [])
        for i, callback in enumerate(callbacks):
            if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
                raise TypeError(
                    f"callbacks[{i}] ({type(callback).__name__}) has none of the methods "
                    f"{', '.join(HOOKS)}; subclass skdeep.Callback and override them."
                )
        return callbacks

    def _check_resumable(self, checkpoint: _Checkpointed) -> None:
        """Refuse to resume with parameters other than those of the checkpointed fit."""
        saved = checkpoint.saved.field("params", dict)
        current = self._encoded_params()
        # More epochs extend the run ("train two more"): the schedule is rebuilt for the new
        # total and continues from the step reached. One-cycle's cycle cannot be stretched.
        longer = (isinstance(saved.get("epochs"), int) and current["epochs"] > saved["epochs"]
                  and self.scheduler != "onecycle")
        changed = [f"{name}={saved.get(name, '(absent)')!r}, now {name}={value!r}"
                   for name, value in current.items()
                   if name not in _RESUME_MAY_CHANGE and saved.get(name, value) != value
                   and not (name == "epochs" and longer)]
        if changed:
            raise ValueError(
                f"the checkpoint in {str(checkpoint.folder)!r} continues a fit with other "
                f"parameters: {'; '.join(changed)}. Set them back to resume, or fit without "
                "resume to start afresh."
            )

    def _initialise(self, labels: np.ndarray) -> None:
        encoder = LabelEncoder().fit(labels)
        self.classes_ = encoder.classes_
        self.n_classes_ = len(self.classes_)
        if self.n_classes_ < 2:
            raise ValueError(
                f"y has a single class ({self.classes_[0]!r}); a classifier needs at least 2."
            )
        self.backbone_ = resolve_backbone(
            self.backbone, self.weights, random_state=seed_of(self.random_state),
            image_size=self.image_size,
        )
        self.data_config_ = self.backbone_.data_config
        self._resolve_runtime()
        self._drop_network()
        self.history_ = []
        self.n_iter_ = 0

    def _check_same_network(self) -> None:
        """warm_start continues the fitted network: refuse params that now describe another one."""
        fitted = self.backbone_
        # random_state=None: a new seed does not make another network of random init (below)
        current = resolve_backbone(self.backbone, self.weights, random_state=None,
                                   image_size=self.image_size)
        changed = []
        if current.name != fitted.name or (
                current.source == "module" and current.weights_id != fitted.weights_id):
            changed.append(f"backbone ({fitted.name!r}, now {current.name!r})")
        elif current.weights_id != fitted.weights_id and not (
                current.weights_id is None and _random_init(fitted.weights_id)):
            changed.append(f"weights ({fitted.weights_id!r}, now {current.weights_id!r})")
        size, fitted_size = current.data_config["input_size"], self.data_config_["input_size"]
        if tuple(size) != tuple(fitted_size):
            changed.append(f"image_size ({fitted_size[-1]}, now {size[-1]})")
        if changed:
            raise ValueError(
                f"warm_start=True continues the fitted network, but {' and '.join(changed)} "
                "changed since it was fitted. Set warm_start=False to start afresh with the new "
                "settings, or set them back to continue."
            )

    def _check_readable(self, bad: dict[int, str], encoded: np.ndarray,
                        train_rows: np.ndarray) -> None:
        """Refuse to train when no training image, or none of a class, could be read.

        Under ``on_error="nan"`` unreadable images are skipped; with all of them (or all of a
        class) unreadable, training would "succeed" with a loss of 0 and a meaningless network.
        """
        unreadable = np.isin(train_rows, np.fromiter(bad, dtype=np.int64, count=len(bad)))
        if not unreadable.any():
            return
        if unreadable.all():
            raise ValueError(
                f"no readable training image is left: all {len(train_rows)} training images "
                f"could not be read (on_error='nan' skips them): {_examples(bad, train_rows)}. "
                "Fix the paths or files."
            )
        readable = np.bincount(encoded[train_rows[~unreadable]], minlength=self.n_classes_)
        empty = np.flatnonzero(readable == 0)
        if empty.size:
            k = empty[0]
            rows = train_rows[unreadable & (encoded[train_rows] == k)]
            others = f" (and {empty.size - 1} more classes)" if empty.size > 1 else ""
            raise ValueError(
                f"class {self.classes_[k:k + 1].tolist()[0]!r}{others} has no readable training "
                f"image: its {len(rows)} training images could not be read (on_error='nan' skips "
                f"them): {_examples(bad, rows)}. Fix the paths or files, or drop the class from y."
            )

    def _check_same_classes(self, labels: np.ndarray) -> None:
        classes = np.unique(labels)
        if len(classes) != len(self.classes_) or not np.all(classes == self.classes_):
            raise ValueError(
                f"warm_start=True needs the classes of the first fit {self.classes_.tolist()}; "
                f"y has {classes.tolist()}."
            )
        self._drop_network()  # rebuilt around the same model_, without stale state

    def _new_model(self, n_classes: int) -> nn.Module:
        model = self.backbone_.build(progress=self.progress, drop_path_rate=self.drop_path_rate)
        self.head_ = find_head(model)
        replace_head(model, self.head_, n_classes, self.dropout)
        return model.to(self.device_)

    def _transform(self, train: bool):
        """At train time the ``augment`` policy's transform, else the evaluation one."""
        return train_transform(self.data_config_, self.augment if train else False,
                               exact_centre=not train and self.tta in TTA_NAMES)

    def _split(self, encoded: np.ndarray, seed: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        rows = np.arange(len(encoded))
        if self.validation_fraction == 0:
            return rows, None
        n_valid = math.ceil(self.validation_fraction * len(rows))
        counts = np.bincount(encoded, minlength=self.n_classes_)
        if n_valid < self.n_classes_ or counts.min() < 2 or len(rows) - n_valid < self.n_classes_:
            # Small data (a cross-validation fold of a few dozen images) is a normal first try:
            # train on it all rather than fail, and say so once.
            warnings.warn(
                f"validation_fraction={self.validation_fraction} would hold out {n_valid} of "
                f"{len(rows)} images, too few for a stratified split over {self.n_classes_} "
                f"classes (the smallest has {counts.min()} images): training on all "
                f"{len(rows)} images without validation, so without early stopping. Set "
                "validation_fraction=0 to say so (and silence this), or give more images.",
                UserWarning, stacklevel=4,
            )
            return rows, None
        train, valid = train_test_split(rows, test_size=n_valid, stratify=encoded,
                                        random_state=seed)
        return np.sort(train), np.sort(valid)

    def _sample_weights(self, labels, encoded, sample_weight, train_rows) -> np.ndarray:
        n = len(encoded)
        weights = _check_sample_weight(sample_weight, np.empty((n, 1)), dtype=np.float64,
                                       ensure_non_negative=True)
        if self.class_weight is not None:
            per_class = compute_class_weight(self.class_weight, classes=self.classes_,
                                             y=labels[train_rows])
            weights = weights * per_class[encoded]
        mean = weights[train_rows].mean()
        if not mean > 0:
            raise ValueError("the sample weights of the training images are all zero.")
        return weights / mean

    def _train(self, base, encoded, weights, train_rows, valid_rows, seed, callbacks, fingerprint,
               checkpoint, images, warm) -> None:
        settings = self.recipe_params_ = self._settings()
        data = training_data(base, train_rows, valid_rows, eval_transform=self._transform(False),
                             batch_size=self.batch_size, device=self.device_,
                             num_workers=self.num_workers, seed=seed,
                             balance=encoded if settings["sampler"] == "balanced" else None)
        epochs = budget_epochs(settings["max_steps"], self.epochs, len(data.loader))
        layers = trainable_layers(self.model_, self.head_)
        trained = trained_layers(layers, self.train_layers)
        self.trainable_layers_ = [layer.paths for layer in layers]
        self.trained_layers_ = [layer.paths for layer in trained]

        def stage(names: list[str], epochs: int) -> Stage:
            return self._stage(layers, names, epochs, steps_per_epoch=len(data.loader))

        main = stage([layer.name for layer in trained], epochs)
        self.param_groups_ = [
            {"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"],
             "n_params": int(sum(p.numel() for p in g["params"]))} for g in main.groups]
        first_epoch = self.n_iter_ + 1 if checkpoint is None else checkpoint.document["first_epoch"]
        done = self.n_iter_ + 1 - first_epoch  # epochs of this run already trained
        # A checkpoint holds the stage of the epoch after it (see run_epochs): rebuild that one.
        head_first = done < self.freeze_epochs
        if settings["head_init"] == "probe" and checkpoint is None and not warm:
            self._head_from_probe(base, encoded, weights, train_rows, seed)
        trainer = self._trainer(stage([], self.freeze_epochs) if head_first else main,
                                encoded, weights)
        if settings["ema"] is not None:
            trainer.average = WeightAverage(trainer.network, settings["ema"])
        stopper = EarlyStopping(self.n_iter_no_change, self.tol) if self.early_stopping else None
        run = Run(trainer, stopper, data.generator, first_epoch=first_epoch,
                  fingerprint=fingerprint, seeded=seed is not None, images=images)
        if checkpoint is not None:
            restore_training_state(run, checkpoint.document, checkpoint.tensors)
        self.history_ = list(self.history_)  # appended to per epoch: never a list shared elsewhere
        self.provenance_ = provenance(self)
        self.temperature_ = 1.0  # an epoch's network, uncalibrated (what checkpoints hold)
        self._run = run  # what save_checkpoint writes, during fit only
        try:
            _call(callbacks, "on_train_begin", self)
            best = run_epochs(
                trainer, data.loader, epochs=self.freeze_epochs + epochs - done,
                first_epoch=self.n_iter_ + 1, validation=data.validation, early_stopping=stopper,
                eval_batch_size=self.batch_size, num_workers=self.num_workers,
                verbose=self.verbose, progress=self.progress,
                check_bad_rows=lambda bad: self._check_readable(bad, encoded, train_rows),
                on_epoch_end=lambda record: self._epoch_ended(record, callbacks),
                unfreeze_after=first_epoch + self.freeze_epochs - 1 if head_first else None,
                # a new optimizer and schedule for the layers' stage (rebuilt: it sets what trains)
                unfreeze=lambda: trainer.enter(stage(main.names, epochs)),
            )
        finally:
            del self._run
            freeze(self.model_)
            trainer.network.eval()
        warn_bad_rows(trainer.bad_rows, base,
                      outcome="they were left out of training (listed in bad_rows_)")
        self.bad_rows_ = _rows_array(trainer.bad_rows)
        self.best_epoch_ = self.n_iter_ if best is None else best
        if self.calibration is not None and data.validation is not None:
            self.temperature_ = self._fitted_temperature(trainer, *data.validation)
        self.provenance_.update(calibration=self.calibration, temperature=self.temperature_)
        _call(callbacks, "on_train_end", self)

    def _settings(self) -> dict[str, Any]:
        """The values of the parameters a recipe may set: the recipe's where left at default."""
        recipe = recipe_params(self.recipe)
        return {name: recipe[name] if name in recipe and getattr(self, name) == _DEFAULTS[name]
                else getattr(self, name) for name in RECIPE_PARAMETERS}

    def _head_from_probe(self, base, encoded: np.ndarray, weights: np.ndarray,
                         train_rows: np.ndarray, seed: int | None) -> None:
        """LP-FT: the new head takes the weights of a linear probe on the frozen features.

        The probe (:func:`skdeep.probing.linear_probe`, as ``evaluate`` fits it) learns on
        the penultimate features of the training images (evaluation transform, no augmentation;
        at most ``_PROBE_ROWS`` of them, stratified), with the sample and class weights; its
        scaler is folded into the weights, so the network's logits start as the probe's
        decision function (for two classes, ``-d/2`` and ``d/2``: the same probabilities).
        """
        rows = train_rows
        if len(rows) > _PROBE_ROWS:
            rows, _ = train_test_split(rows, train_size=_PROBE_ROWS, stratify=encoded[rows],
                                       random_state=seed)
            rows = np.sort(rows)
        network = self._get_network().eval()
        outputs, errors = predict_rows(
            network, Subset(base.view(self._transform(False), targets=False), rows),
            device=self.device_, precision=self.precision_, batch_size=self.batch_size,
            num_workers=self.num_workers)
        read = np.setdiff1d(np.arange(len(rows)), list(errors))  # unreadable: fit reports them
        classes = encoded[rows[read]]
        if len(np.unique(classes)) < 2:
            return  # nothing to probe; fit's checks name the unreadable images
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # an init need not be converged
            probe = linear_probe().fit(outputs[read, :self.n_features_out_], classes,
                                       logisticregression__sample_weight=weights[rows[read]])
        weight, bias = affine_scores(probe.steps[:-1], probe[-1], self.n_features_out_)
        if len(weight) == 1:  # sklearn's binary decision d = score(1) - score(0)
            weight, bias = np.vstack([-weight, weight]) / 2, np.concatenate([-bias, bias]) / 2
        fc = self.model_.get_submodule(self.head_).fc
        present = torch.as_tensor(probe[-1].classes_, device=fc.weight.device)
        with torch.no_grad():
            fc.weight[present] = torch.as_tensor(weight, dtype=fc.weight.dtype,
                                                 device=fc.weight.device)
            fc.bias[present] = torch.as_tensor(bias, dtype=fc.bias.dtype, device=fc.bias.device)

    def _fitted_temperature(self, trainer: Trainer, dataset, rows: np.ndarray) -> float:
        """The temperature that calibrates the best weights' logits of the validation images."""
        logits, errors = predict_rows(trainer.logits, dataset, device=self.device_,
                                      precision=self.precision_, batch_size=self.batch_size,
                                      num_workers=self.num_workers)
        read = np.setdiff1d(np.arange(len(rows)), list(errors))  # unreadable: listed in bad_rows_
        if not len(read):
            return 1.0
        index = torch.as_tensor(rows[read], device=self.device_)
        return fit_temperature(logits[read], trainer.targets[index].cpu().numpy(),
                               trainer.weights[index].cpu().numpy())

    def _stage(self, layers: list[TrainableLayer], names: list[str], epochs: int, *,
               steps_per_epoch: int) -> Stage:
        """The stage training the head and the layers ``names`` for ``epochs`` epochs.

        Sets which parameters train. Nothing random: a resumed fit rebuilds it identically.
        """
        model = self.model_
        set_trainable(model, layers, self.head_, names)
        from_scratch = self.weights is None and isinstance(self.backbone, str)
        groups = param_groups(
            model, layers, self.head_, lr=self.lr,
            backbone_lr_mult=1.0 if from_scratch else self.backbone_lr_mult,
            layer_decay=self.layer_decay, weight_decay=self.weight_decay,
        )
        optimizer = make_optimizer(self.optimizer, groups, nesterov=self.nesterov)
        schedule = LRSchedule(optimizer, self.scheduler, steps_per_epoch=steps_per_epoch,
                              epochs=epochs, warmup_epochs=self.warmup_epochs)
        return Stage(groups, optimizer, schedule, names, lambda: set_train_modes(
            model, layers, self.head_, names, self.bn_mode_))

    def _trainer(self, stage: Stage, encoded: np.ndarray, weights: np.ndarray) -> Trainer:
        """A trainer of the network on the encoded targets and sample weights, in ``stage``."""
        return Trainer(
            network=self._get_network(),
            logits_from=self.n_features_out_,
            set_modes=stage.set_modes,
            optimizer=stage.optimizer,
            schedule=stage.schedule,
            scaler=make_scaler(self.device_, self.precision_),
            targets=torch.as_tensor(encoded, dtype=torch.long, device=self.device_),
            weights=torch.as_tensor(weights, dtype=torch.float32, device=self.device_),
            device=self.device_,
            precision=self.precision_,
            label_smoothing=self.label_smoothing,
            grad_clip_norm=self.grad_clip_norm,
            mix=batch_mixer(self.mixup, self.cutmix, self.n_classes_),
        )

    def _epoch_ended(self, record: dict[str, Any], callbacks: list[Any]) -> bool:
        """Record the epoch, then run the callbacks; whether one of them asks to stop."""
        self.history_.append(record)
        self.n_iter_ = record["epoch"]
        self.best_epoch_ = record["epoch"]  # until training ends, the network holds this epoch
        stop = False
        for callback in callbacks:  # every callback sees every epoch, even after a stop request
            if hasattr(callback, "on_epoch_end") and callback.on_epoch_end(self, record):
                stop = True
        return stop

    # --- the network ---------------------------------------------------------------------------

    @property
    def model_(self) -> nn.Module:
        """The fine-tuned network on ``device_`` (rebuilt from its weights after unpickling)."""
        if getattr(self, "_model", None) is None:
            check_is_fitted(self, "classes_")
            state = self.__dict__.pop("_model_state", None)
            if state is None:
                raise RuntimeError("this estimator has lost its network; fit it again.")
            self._model = self._assemble(state_dict_from_bytes(state))
        return self._model

    # The word was "blocks" before it became "layers", as in train_layers: the old names stay a
    # while, warning.
    @property
    def blocks_(self) -> list[tuple[str, ...]]:
        """Deprecated alias of ``trainable_layers_``."""
        return _renamed(self, "blocks_", "trainable_layers_")

    @property
    def trained_blocks_(self) -> list[tuple[str, ...]]:
        """Deprecated alias of ``trained_layers_``."""
        return _renamed(self, "trained_blocks_", "trained_layers_")

    def _assemble(self, state_dict: dict[str, torch.Tensor]) -> nn.Module:
        """The architecture (no pretrained weights needed) with the head and ``state_dict``."""
        model = self._architecture()
        model.load_state_dict(state_dict, strict=True)
        return freeze(model).to(self.device_)

    def _architecture(self) -> nn.Module:
        """The fitted network's architecture with its new head, randomly initialised."""
        model = self.backbone_.build_architecture()
        return replace_head(model, self.head_, len(self.classes_), self.dropout)

    def _get_network(self) -> FeatureExtractor:
        """``uint8`` batch -> ``[embedding | logits]`` rows, in one forward pass."""
        if getattr(self, "_network", None) is None:
            model = self.model_
            config = self.data_config_
            network = FeatureExtractor(model, [PENULTIMATE, LOGITS], "avg", config["mean"],
                                       config["std"]).to(self.device_)
            self.n_features_out_ = int(model.get_submodule(self.head_).fc.in_features)
            self._network = network
        return self._network

    def _drop_network(self) -> None:
        self.__dict__.pop("_network", None)
        self.__dict__.pop("_compiled", None)  # its weights are constants of the graph

    # --- prediction ----------------------------------------------------------------------------

    def _outputs(self, X: Any, desc: str, outcome: str = "their rows are NaN") -> np.ndarray:
        """``[embedding | logits]`` rows; under ``tta``, ``[mean embedding | log mean proba]``.

        Unreadable rows (``on_error="nan"``) are NaN, ``bad_rows_``, and warned about, the
        warning saying ``outcome``.
        """
        check_is_fitted(self)
        network = self._get_network().eval()
        # tta=None is one view, the image itself: the network alone, as without TTA
        dataset = self._dataset(X)
        rows, errors = self._run_dataset(network, dataset, desc, views=self._tta_views(),
                                         log_proba_from=self.n_features_out_)
        warn_bad_rows(errors, dataset, outcome=f"{outcome} (listed in bad_rows_)")
        self.bad_rows_ = _rows_array(errors)
        return rows

    def _tta_views(self) -> list:
        """The test-time views of ``tta`` (checked here: it may be set after fitting)."""
        validate_parameter_constraints(
            {name: self._parameter_constraints[name] for name in ("tta", "augment")},
            {"tta": self.tta, "augment": self.augment}, caller_name=type(self).__name__)
        return tta_views(self.tta, self.data_config_, augment=self.augment,
                         seed=seed_of(self.random_state))

    def _logits(self, X: Any, outcome: str = "their rows are NaN") -> np.ndarray:
        """The logits of ``X`` divided by ``temperature_`` (1.0 in fits saved before it)."""
        logits = self._outputs(X, "predicting", outcome)[:, self.n_features_out_:]
        return logits.astype(np.float64) / getattr(self, "temperature_", 1.0)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits of the classes (for two classes: ``logit(classes_[1]) - logit(classes_[0])``).

        Divided by ``temperature_`` (see ``calibration``): what
        ``CalibratedClassifierCV(FrozenEstimator(clf), method=...)`` reads.

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,) for two classes
        """
        logits = self._logits(X)
        if self.n_classes_ == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows of unreadable images (``on_error="nan"``) are NaN; ``bad_rows_`` lists them.
        """
        logits = self._logits(X)
        return softmax(logits, axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`, computed stably from the logits.

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self._logits(X)
        return log_softmax(logits, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each image, a label from ``classes_``.

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Of the dtype of ``classes_`` (that of ``y``). An image that could not be read
            (``on_error="nan"``) has no prediction: its row gets ``classes_[0]`` as a placeholder,
            a :class:`~skdeep.BadImageWarning` says so and names it, and ``bad_rows_`` lists such
            rows, so that ``np.delete(labels, clf.bad_rows_)`` keeps the real predictions. For a
            result that cannot be mistaken for a prediction, use :meth:`predict_proba`: those
            rows are NaN. (A sentinel such as ``None`` would turn integer labels into objects
            that metrics refuse, and no value of every label type can mean "missing".)
        """
        check_is_fitted(self)  # before classes_ is read below
        logits = self._logits(X, f"predict gives their rows the placeholder "
                                 f"{plain(self.classes_[0])!r}, not a prediction")
        # NaN rows (unreadable images) argmax to column 0: classes_[0], the documented placeholder
        return self.classes_[np.nan_to_num(logits, nan=0.0).argmax(axis=1)]

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings from the fine-tuned network: the input of its new head (penultimate layer).

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), float32
        """
        return self._outputs(X, "embedding")[:, :self.n_features_out_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of :meth:`transform`'s columns: ``penultimate_<i>``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(feature_names([PENULTIMATE], [self.n_features_out_]), dtype=object)

    # --- persistence ---------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # a copy (see CNNEstimatorMixin.__getstate__)
        state.pop("_run", None)  # a fit in progress (pickled from a callback) is not resumable
        state.pop("_network", None)
        model = state.pop("_model", None)
        if model is not None:  # fine-tuned weights cannot be rebuilt: always stored
            state["_model_state"] = state_dict_to_bytes(model)
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted classifier to the folder ``path`` in a pickle-free format.

        The weights go to ``weights.safetensors`` and the parameters, classes, preprocessing and
        history to ``skdeep.json``. :meth:`load` reads them without unpickling anything, so such
        a folder is safe to load from an untrusted source. The backbone must be given by name (a
        module instance is code; pickle or joblib such estimators instead).

        The folder is written whole or not at all: both files go to a temporary folder next to
        it, which then replaces ``path``; if saving fails, a previous save at ``path`` is intact.

        Parameters
        ----------
        path : str or path-like
            Folder to create, or to replace if it holds a previous save (or nothing); a folder
            with other files in it is refused.
        """
        check_is_fitted(self)
        if self.backbone_.source == "module" or not isinstance(self.backbone, str):
            raise ValueError(
                "save() needs backbone given by name (when fitted and now); a module instance is "
                "code, not data. Use joblib.dump for such an estimator."
            )
        config = {
            "estimator": type(self).__name__,
            "skdeep_version": __version__,
            # for refitting; the network is described by the fitted state below
            "params": self._encoded_params(),
            "backbone": {"name": self.backbone_.name, "weights_id": self.backbone_.weights_id},
            **_safe_format.fitted_fields(self),
        }
        _safe_format.write(path, config, self.model_.state_dict())

    def _encoded_params(self) -> dict[str, Any]:
        """The parameters as :meth:`save` writes them (JSON types)."""
        params = {}
        for name, value in self.get_params(deep=False).items():
            if name == "random_state" and not (value is None or isinstance(value, Integral)):
                value = None  # a RandomState instance only matters for refitting
            elif name == "callbacks":
                value = None  # objects with code: give them again when refitting
            elif name == "augment" and callable(value):
                value = describe(value)  # code is not saved: load() says so
            elif name == "class_weight" and isinstance(value, dict):
                value = {"pairs": [[_safe_format.encode_scalar(k), float(v)] for k, v in value.items()]}
            else:
                value = _safe_format.encode_scalar(value)
            params[name] = value
        return params

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the fit in progress to the new folder ``path``, to continue it with ``resume=``.

        Called during :meth:`fit`, from a callback's ``on_epoch_end`` (as
        :class:`~skdeep.Checkpoint` does, which also makes the write atomic): the
        fitted state so far goes to ``path/model`` (as :meth:`save` writes it, so
        :meth:`load` reads it), and the training state to ``path/training.json`` and
        ``path/training.safetensors``: the optimizer's state, the schedule's position, early
        stopping's record and best weights, and the random streams. Nothing is pickled.

        Parameters
        ----------
        path : str or path-like
            A folder that does not exist yet.
        """
        run = self.__dict__.get("_run")
        if run is None:
            raise RuntimeError("save_checkpoint() writes the state of a fit in progress: call it "
                               "during fit, from a callback such as skdeep.Checkpoint; "
                               "save() writes a fitted model.")
        folder = Path(path)
        folder.mkdir(parents=True)  # FileExistsError names it: a checkpoint is never merged
        self.save(folder / "model")
        write_training_state(folder, run)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> FineTunedCNNClassifier:
        """Load a classifier written by :meth:`save`, without unpickling anything.

        The network is the fitted one the folder describes (backbone, input size, head), whatever
        the saved parameters say: they are restored for refitting. Every field is checked before
        anything is built, so a tampered folder raises a ``ValueError`` naming the file and the
        field instead of running code or exhausting memory; ``num_workers`` is capped at this
        machine's CPU count (with a warning).

        Parameters
        ----------
        path : str or path-like
            The folder given to :meth:`save`.
        device : str, default=None
            Overrides the saved ``device`` parameter (for example ``"cpu"``).

        Returns
        -------
        FineTunedCNNClassifier
        """
        saved = _safe_format.SavedFolder(path)
        if saved.config.get("estimator") != cls.__name__:
            raise ValueError(f"{str(path)!r} holds a {saved.config.get('estimator')}, not a "
                             f"{cls.__name__}.")
        params = _saved_params(saved, cls)
        if device is not None:
            params["device"] = device
        estimator = cls(**params)
        _safe_format.restore_fitted(saved, estimator)
        estimator.__dict__.setdefault("temperature_", 1.0)  # saved before calibration existed
        estimator.n_classes_ = len(estimator.classes_)
        name = saved.field("backbone.name", str)
        try:
            architecture = resolve_backbone(name, None, random_state=0)
        except ValueError as exc:
            raise saved.error("backbone.name", f"names no known backbone: {exc}") from exc
        estimator.backbone_ = dataclasses.replace(
            architecture, weights_id=saved.field("backbone.weights_id", (str, type(None))),
            data_config=estimator.data_config_, reproducible=False,
        )
        # Compare the weights file with the network's shapes before building it for real: a
        # tampered backbone name must not allocate a network far larger than the file.
        network = (f"field 'backbone.name' {name!r}, field 'head' {estimator.head_!r}, "
                   f"{estimator.n_classes_} classes in field 'classes'")
        try:
            shapes = _unallocated_shapes(estimator._architecture)
        except (ValueError, AttributeError, KeyError) as exc:  # e.g. a head that is not there
            raise saved.misfit(network, str(exc)) from exc
        if shapes is not None:
            saved.check_weights(shapes, network)
        try:
            estimator._resolve_runtime()
        except (RuntimeError, ValueError) as exc:  # torch.device("nonsense")
            raise saved.error("params.device", f"is not a device: {exc}") from exc
        state_dict = saved.state_dict()
        try:
            estimator._model = estimator._assemble(state_dict)
        except (RuntimeError, ValueError, AttributeError, KeyError) as exc:
            raise saved.misfit(network, str(exc)) from exc
        estimator._get_network()
        return estimator


# Parameters that do not change the numbers of a fit: a resumed fit may set them anew.
#: Each parameter's default, from the signature: a recipe fills the parameters left at it.
_DEFAULTS = {name: parameter.default for name, parameter in
             inspect.signature(FineTunedCNNClassifier.__init__).parameters.items()
             if name != "self"}

#: LP-FT's probe learns on at most this many training images (a stratified sample): its
#: features are held in memory, and the head it initialises is refined by training anyway.
_PROBE_ROWS = 20_000

_RESUME_MAY_CHANGE = frozenset(
    {"callbacks", "verbose", "progress", "num_workers", "device", "compile", "warm_start", "tta"})


class _Checkpointed:
    """A checkpoint folder written by :meth:`FineTunedCNNClassifier.save_checkpoint`, read back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved = _safe_format.SavedFolder(folder / "model")
        self.document, self.tensors = read_training_state(folder)

    def check_classes(self, classes: np.ndarray) -> None:
        saved = self.saved.labels("classes")
        if len(saved) != len(classes) or not np.all(saved == classes):
            raise ValueError(f"the checkpoint in {str(self.folder)!r} was fitted on the classes "
                             f"{saved.tolist()}; y has the labels {classes.tolist()}. Resume with "
                             "the y of that fit.")

    def restore_network(self, estimator: FineTunedCNNClassifier) -> None:
        """The network, history and epoch count of the checkpoint, into ``estimator``."""
        state = self.saved.state_dict()
        try:
            estimator.model_.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            name = self.saved.field("backbone.name", str)
            raise self.saved.misfit(f"field 'backbone.name' {name!r}", str(exc)) from exc
        _safe_format.restore_fitted(self.saved, estimator,
                                    ("bn_mode_", "history_", "n_iter_", "best_epoch_",
                                     "temperature_"))


def _fingerprint(encoded: np.ndarray, weights: np.ndarray, train_rows: np.ndarray,
                 valid_rows: np.ndarray | None) -> str:
    """SHA-256 of what a fit trains on besides the images: targets, weights and the split."""
    digest = hashlib.sha256()
    for array in (encoded, weights, train_rows, valid_rows if valid_rows is not None else []):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes() + b"|")
    return digest.hexdigest()


class _ImagesDigest:
    """SHA-256 of the content keys of X's images (the feature cache's keys), computed once,
    when first asked: by the first checkpoint written, or by ``resume=``. A fit that writes no
    checkpoint never reads its files an extra time."""

    def __init__(self, items: Any) -> None:
        self.items = items
        self.digest: str | None = None

    def __call__(self) -> str:
        if self.digest is None:
            digest = hashlib.sha256()
            for key in image_keys(self.items):
                digest.update(f"{key}\n".encode())  # None (unreadable) is a key of its own
            self.digest = digest.hexdigest()
        return self.digest


def _call(callbacks: list[Any], hook: str, estimator: FineTunedCNNClassifier) -> None:
    """``callback.hook(estimator)`` for each callback that has the hook."""
    for callback in callbacks:
        if hasattr(callback, hook):
            getattr(callback, hook)(estimator)


def _rows_array(errors: dict[int, str]) -> np.ndarray:
    """The rows of ``{row: message}``, sorted, as an index array."""
    return np.array(sorted(errors), dtype=np.intp)


def _saved_params(saved: _safe_format.SavedFolder, cls: type) -> dict[str, Any]:
    """The ``params`` field of a save, each checked against the estimator's constraints."""
    params = dict(saved.field("params", dict))
    # Saved before the step budget: such a fit trained for ``epochs`` epochs; refitting it does too.
    params.setdefault("max_steps", None)
    unknown = sorted(set(params) - set(cls().get_params(deep=False)))
    if unknown:
        raise saved.error("params", f"has unknown parameters {unknown}")
    if isinstance(params.get("class_weight"), dict):
        pairs = saved.field("params.class_weight.pairs", list)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2
                    and _safe_format.is_of(pair[0], (str, bool, int, float))
                    and _safe_format.is_of(pair[1], (int, float))):
                raise saved.error(f"params.class_weight.pairs[{i}]",
                                  "is not a [label, weight] pair")
        params["class_weight"] = {label: weight for label, weight in pairs}
    if isinstance(params.get("augment"), dict):  # a callable, described but not saved (code)
        what = saved.field("params.augment.callable", str)
        warnings.warn(f"{saved.where('params.augment')}: the model was trained with the "
                      f"augmentation callable {what}, which save() does not store (it is code): "
                      "loaded with augment=False. Give it again with set_params(augment=...) "
                      "before refitting (or before predicting with an int tta).", UserWarning,
                      stacklevel=3)
        params["augment"] = False
    for name, value in params.items():
        try:
            validate_parameter_constraints(cls._parameter_constraints, {name: value},
                                           caller_name=cls.__name__)
        except InvalidParameterError as exc:
            raise saved.error(f"params.{name}", f"is invalid: {exc}") from exc
    size = params.get("image_size")
    if size is not None and size > _safe_format.MAX_IMAGE_SIZE:
        raise saved.error("params.image_size",
                          f"is {size}, more than {_safe_format.MAX_IMAGE_SIZE} pixels")
    cpus = os.cpu_count() or 1
    if isinstance(params.get("num_workers"), int) and params["num_workers"] > cpus:
        warnings.warn(f"{saved.where('params.num_workers')} is {params['num_workers']}, more than "
                      f"the {cpus} CPUs of this machine: capped at {cpus}.", UserWarning,
                      stacklevel=3)
        params["num_workers"] = cpus
    return params


class _EmptyOnMeta(TorchFunctionMode):
    """``torch.empty`` without a device -> the meta device: module parameters get shapes but no
    memory, while the little arithmetic some constructors do (RegNet's widths) stays real."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _unallocated_shapes(build) -> dict[str, tuple[int, ...]] | None:
    """Shapes of the state_dict of the module ``build()`` returns, built without its memory.

    Everything on the meta device first; constructors that compute with tensors fail there, so
    then only ``torch.empty`` (how layers allocate parameters). None if neither builds.
    """
    for mode in (torch.device("meta"), _EmptyOnMeta()):
        try:
            with mode:
                model = build()
        except (NotImplementedError, RuntimeError, TypeError):  # needs real tensors: the next
            continue
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}
    return None


def _random_init(weights_id: str | None) -> bool:
    """Whether a fitted backbone's weights were randomly initialised (see resolve_backbone)."""
    return weights_id is None or weights_id.startswith("random:")


def _examples(bad: dict[int, str], rows: np.ndarray, shown: int = 3) -> str:
    """The messages of the first few ``rows`` (all in ``bad``), for an error."""
    listed = [bad[int(row)] for row in rows if int(row) in bad][:shown]
    more = f"; and {len(rows) - shown} more" if len(rows) > shown else ""
    return "; ".join(listed) + more


def _check_labels(y: Any) -> np.ndarray:
    if y is None:
        raise ValueError("FineTunedCNNClassifier.fit needs labels y.")
    labels = column_or_1d(np.asarray(y), warn=True)
    if labels.dtype == object:
        _check_label_types(labels)
    elif labels.dtype.kind == "U" and isinstance(y, (list, tuple)):
        # np.asarray turns ["a", 1] into ["a", "1"] silently: look at the items themselves
        _check_label_types(column_or_1d(np.asarray(y, dtype=object)))
    check_classification_targets(labels)
    return labels


def _check_label_types(items: np.ndarray) -> None:
    """Refuse missing labels and labels that cannot be sorted together (str with numbers)."""
    kinds = [_label_kind(item) for item in items]
    missing = [row for row, kind in enumerate(kinds) if kind == "None"]
    if missing:
        raise ValueError(f"y has missing labels (None or NaN) at rows {preview(missing, 5)}: drop "
                         "those rows or give them a label.")
    rows: dict[str, list[int]] = {}
    for row, kind in enumerate(kinds):
        rows.setdefault(kind, []).append(row)
    if len({_SORTED_AS.get(kind, kind) for kind in rows}) > 1:
        names = sorted(rows, key=lambda kind: -len(rows[kind]))  # most common, then first seen
        others = "; ".join(f"{name} at rows {preview(rows[name], 5)}" for name in names[1:])
        kinds = ", ".join(names[:-1]) + f" and {names[-1]}"
        raise ValueError(f"y mixes {kinds} labels ({others}): use one type "
                         "(all str, or all numbers).")


_SORTED_AS = {"bool": "number", "int": "number", "float": "number"}  # these compare with each other


def _label_kind(item: Any) -> str:
    """``"str"``, ``"bool"``, ``"int"``, ``"float"``, ``"None"`` (also NaN) or the type's name."""
    if item is None or (isinstance(item, (float, np.floating)) and math.isnan(item)):
        return "None"
    if isinstance(item, (str, np.str_)):
        return "str"
    if isinstance(item, (bool, np.bool_)):
        return "bool"
    if isinstance(item, (Integral, np.integer)):
        return "int"
    if isinstance(item, (Real, np.floating)):
        return "float"
    return type(item).__name__



def _renamed(estimator: Any, old: str, new: str) -> Any:
    """``estimator.new``, with a FutureWarning that ``old`` is its deprecated name."""
    value = getattr(estimator, new)  # unfitted: the AttributeError, without a warning
    warnings.warn(f"{old} is now called {new} (the layers that train_layers counts); {old} will "
                  "be removed in a future release.", FutureWarning, stacklevel=3)
    return value
