"""PretrainedCNNFeatures: a frozen pretrained CNN as a scikit-learn transformer (DeCAF style)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.utils.data import Subset

from ._augment import View, tta_views
from ._base import (
    COMMON_PARAMETER_CONSTRAINTS,
    VIEW_PARAMETER_CONSTRAINTS,
    CNNEstimatorMixin,
    seed_of,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from ._defaults import DEFAULT_BACKBONE, POOLINGS
from ._device import memory_format
from ._inputs import ImageDataset, warn_bad_rows
from ._jpeg import eval_jpeg_decoder
from ._layers import FeatureExtractor, feature_names, normalize_layers
from ._preprocessing import eval_resize_kernels
from ._provenance import provenance
from .backbones import freeze, resolve_backbone
from .cache import CacheInfo, FeatureCache, as_cache, image_keys, layer_key

# Largest block of rows iter_transform hands on at once (hits read from the cache by the block).
_BLOCK_BYTES = 32 * 2**20


class PretrainedCNNFeatures(CNNEstimatorMixin, TransformerMixin, BaseEstimator):
    """Embed images with a frozen pretrained CNN, one row of features per image.

    The network runs in batches on the best device available (CUDA, then Apple MPS, then the
    CPU), in half precision where the hardware computes it natively, and returns the activations
    of the chosen layer(s) pooled to a vector: the DeCAF recipe of Donahue et al. (2014) as a
    scikit-learn transformer, ready for ``Pipeline``, ``GridSearchCV`` and ``ColumnTransformer``.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Network to use: a name from :func:`skdeep.list_backbones` (torchvision names such as
        ``"resnet50"`` or ``"vgg16"``, timm models as ``"timm/<name>"``), or a module instance.
        The default's ImageNet weights ship with skdeep and work offline.
    weights : "DEFAULT", str, torchvision WeightsEnum, path or None, default="DEFAULT"
        ``"DEFAULT"`` for the architecture's recommended pretrained weights (downloaded once into
        the torch or Hugging Face cache), a torchvision weights name (``"IMAGENET1K_V1"``) or enum,
        a timm pretrained tag, a local ``.pth``/``.safetensors`` state_dict, or ``None`` for a
        randomly initialised network (seeded by ``random_state``).
    layer : str or list of str, default="penultimate"
        Where to read features: ``"penultimate"`` (the pooled vector the classifier sees),
        ``"logits"``, the DeCAF names ``"pool5"``, ``"fc6"``, ``"fc7"`` for AlexNet/VGG, or any
        module path from :func:`skdeep.list_layers`. A list concatenates several layers, all read
        in one forward pass.
    pooling : {"avg", "max", "gem", "avgmax"} or None, default="avg"
        How a spatial feature map becomes a vector: global average, max, generalised-mean (p=3)
        pooling, the mean of avg and max, or ``None`` to flatten the map.
    image_size : int, default=None
        Side of the square network input. ``None`` uses the weights' own size (224 for most);
        smaller values are much faster and suit small images such as 28x28 digits. Unlike
        ``skdeep extract`` and ``skdeep evaluate``, whose ``--image-size auto`` (their default)
        feeds images of at most 64 px at 96 px, nothing is chosen from the images here: for the
        command line's features of small images, pass ``image_size=96``.
    batch_size : int, default=None
        Images per forward pass. ``None`` picks what runs fastest on the device: 64 on a GPU;
        on a CPU about 400,000 input pixels per batch (8 images at 224 px, 43 at 96 px), since
        larger batches overflow the CPU caches and run slower.
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Compute precision. ``"auto"`` uses bf16 (or fp16) autocast on CUDA and bf16 on CPUs with
        native bf16 (AVX512-BF16/AMX), fp32 elsewhere. The output is always float32.
    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode and resize images in parallel with the network.
        0 reads in the main process (on a GPU, one batch ahead in a thread). ``"auto"``: 0 on a
        CPU and for images already in memory (resized a batch at a time on the device); on CUDA,
        for files, one per spare core, at most 8.
    on_error : {"raise", "nan"}, default="raise"
        What an unreadable image does: raise an error naming its row and path, or give a row of
        NaN (with a warning listing the bad rows) so that rows stay aligned with the input.
    cache : str, os.PathLike or FeatureCache, default=None
        Store each image's features on disk (see :class:`FeatureCache`) and reuse them across
        folds, grid candidates and sessions. With a warm cache, ``fit`` and ``transform`` build
        no network at all. Keys cover the architecture, the weights (by hash), preprocessing,
        precision, layer, pooling and the image content, all as fitted. A relative path is
        resolved at fit time (see ``cache_``).
    cache_layers : str or list of str, default=None
        Further layers computed in the same forward pass as ``layer`` and stored in the cache
        on each miss, so that a grid over ``cnn__layer`` costs one pass per image. Only used
        with ``cache``.
    progress : bool, default=False
        Show a progress bar.
    random_state : int, RandomState instance or None, default=None
        Seed of the random initialisation when ``weights=None``.
    compile : {"auto"} or bool, default="auto"
        Run the network as one compiled graph (``torch.compile``): the backbone is traced, cut
        after the deepest requested layer and, on CPUs, compiled by inductor with its weights
        frozen into the graph, about twice as fast as eager bf16 once compiled. Compiling takes
        seconds (fewer with a warm cache; see :func:`skdeep.compile_cache_dir`). ``"auto"``
        compiles on CPUs when a call has enough images to pay for that; ``True`` always,
        ``False`` never. Outputs agree with eager to floating-point rounding (cache entries are
        shared). A network that cannot be compiled runs eager, with one warning. A first
        compile is said in one line on stderr (for ``True`` always, for ``"auto"`` when
        ``progress`` is on).
    tta : None, "flip", "symmetric" or int, default=None
        Test-time augmentation: each image's features are the mean of its features over several
        views of it, one batched forward pass per view (the views are made on the device from
        the decoded batch), so that features become (nearly) invariant to the changes the
        views make. ``"flip"``: the image and its mirror image; ``"symmetric"``: the 8
        rotations and reflections of the square (needs a square input); an int ``n``: the
        image and ``n - 1`` random views of the ``augment`` policy, seeded by
        ``random_state`` (their draws follow the order of the images in ``X``: the same ``X``
        and seed give the same features). Costs one forward pass per view. Read at ``fit``;
        the cache keeps ``"flip"`` and ``"symmetric"`` features apart from plain ones and
        ignores an int ``tta`` (with a warning: a random view depends on the image's place
        among those embedded, so cached and fresh features would differ).
    augment : {"natural", "symmetric", "light"}, bool or callable, default=True
        The augmentation policy, as for :class:`FineTunedCNNClassifier`. A frozen network
        never trains, so here it only shapes the random views of an int ``tta``: ``"natural"``
        (``True``) random-resized-crops and horizontal flips, ``"symmetric"`` both flips,
        90-degree rotations and a mild crop, ``"light"`` the mild crop alone; a callable
        receives each image as a ``uint8`` tensor (C, H, W) and returns one of the same shape.
        Ignored unless ``tta`` is an int.

    Attributes
    ----------
    backbone_ : skdeep.backbones.Backbone
        The resolved backbone: name, weights identity and data config.
    model_ : torch.nn.Module
        The frozen network (eval mode, no gradients) on ``device_``. After unpickling it is
        rebuilt on first use.
    data_config_ : dict
        Preprocessing derived from the weights: input size, interpolation, crop, mean and std.
    layers_ : list of str
        The layers read, in output order.
    feature_widths_ : list of int
        Number of output columns contributed by each layer.
    n_features_out_ : int
        Total number of output columns.
    device_ : torch.device
        Where the network runs.
    precision_ : str
        The resolved precision.
    cache_ : FeatureCache or None
        The feature cache of ``cache``, a relative path resolved against the working directory
        at fit time: a pickled model loaded elsewhere uses the same folder. Setting ``cache``
        after fit takes effect without a refit: ``set_params(cache=None)`` switches the cache
        off, another folder or :class:`FeatureCache` is used from then on.
    pooling_, tta_ : str, int or None
        ``pooling`` and ``tta`` as fitted (read-only): what the features are made with.
    provenance_ : dict
        What the features are made with: library versions, the backbone and its weights (id and
        SHA-256 of the file), the data config, device, precision, compile mode and when it was
        fitted. ``skdeep extract`` writes it into its output, ``skdeep evaluate`` into
        ``results.json``.

    See Also
    --------
    FineTunedCNNClassifier : fine-tune the network instead of freezing it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> cnn = PretrainedCNNFeatures(image_size=64).fit(images)
    >>> cnn.transform(images).shape
    (4, 1280)
    >>> cnn.get_feature_names_out()[:2].tolist()
    ['penultimate_0', 'penultimate_1']
    """

    _parameter_constraints: dict = {
        **COMMON_PARAMETER_CONSTRAINTS,
        **VIEW_PARAMETER_CONSTRAINTS,
        "layer": [str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [None, str, os.PathLike, FeatureCache],
        "cache_layers": [None, str, list, tuple],
    }

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        *,
        weights: Any = "DEFAULT",
        layer: str | list[str] = "penultimate",
        pooling: str | None = "avg",
        image_size: int | None = None,
        batch_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        num_workers: int | str = "auto",
        on_error: str = "raise",
        cache: str | os.PathLike | FeatureCache | None = None,
        cache_layers: str | list[str] | None = None,
        progress: bool = False,
        random_state: Any = None,
        compile: str | bool = "auto",
        tta: str | int | None = None,
        augment: bool | str | Callable = True,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.on_error = on_error
        self.cache = cache
        self.cache_layers = cache_layers
        self.progress = progress
        self.random_state = random_state
        self.compile = compile
        self.tta = tta
        self.augment = augment

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> PretrainedCNNFeatures:
        """Resolve the backbone, build the frozen network and learn its output width.

        The images are not needed (the network is pretrained, nothing is learned from X); X and
        y are accepted for Pipeline compatibility.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : PretrainedCNNFeatures
        """
        self.layers_ = normalize_layers(self.layer)
        # Everything the cache keys and the network read is fixed here, so that set_params after
        # fit can never make transform store one setting's features under another's key.
        self._fitted_pooling = self.pooling
        self._fitted_tta, self._fitted_augment = self.tta, self.augment
        self._tta_seed = seed_of(self.random_state)  # None: fresh random views at every call
        extra = normalize_layers(self.cache_layers) if self.cache_layers is not None else []
        self.backbone_ = resolve_backbone(
            self.backbone, self.weights, random_state=seed_of(self.random_state),
            image_size=self.image_size,
        )
        self.data_config_ = self.backbone_.data_config
        # Refused now rather than at transform: "symmetric" needs a square input, an int a policy.
        self._views()
        self._resolve_runtime()
        self._model = None
        self._extractor = None
        self._compiled = None
        # A relative cache path is resolved now, against the working directory of fit: a model
        # pickled and loaded elsewhere keeps using the folder it was fitted with.
        self.cache_ = as_cache(self.cache)
        self._fitted_cache = self.cache
        cache = self._feature_cache()
        extra = extra if cache is not None else []
        self._compute_layers = self.layers_ + [name for name in extra if name not in self.layers_]
        widths = cache.widths(self._layer_keys()) if cache is not None else None
        if widths is None:  # a cold (or no) cache: build the network and measure its outputs
            widths = self._get_extractor().widths
            if cache is not None:
                cache.record_widths(self._layer_keys(), widths, self._layer_specs())
        self._compute_widths = list(widths)
        self.feature_widths_ = self._compute_widths[: len(self.layers_)]
        self.n_features_out_ = int(sum(self.feature_widths_))
        # Last: the weights file of a network built just now (downloaded, perhaps) is hashed.
        self.provenance_ = provenance(self)
        return self

    @property
    def model_(self) -> nn.Module:
        """The frozen backbone on ``device_`` (built lazily after unpickling)."""
        if getattr(self, "_model", None) is None:
            check_is_fitted(self, "backbone_")
            model = self.backbone_.build(progress=self.progress)
            state = self.__dict__.pop("_model_state", None)
            if state is not None:
                model.load_state_dict(state_dict_from_bytes(state))
            self._model = freeze(model).to(self.device_, memory_format=memory_format(self.device_))
        return self._model

    @property
    def pooling_(self) -> str | None:
        """The ``pooling`` the features are made with, as fitted (``set_params`` after fit does
        not change it)."""
        check_is_fitted(self, "layers_")
        return self._fitted_pooling

    @property
    def tta_(self) -> str | int | None:
        """The ``tta`` the features are made with, as fitted."""
        check_is_fitted(self, "layers_")
        return self._fitted_tta

    def _get_extractor(self) -> FeatureExtractor:
        """The network wrapped to return the compute layers (requested + cache_layers)."""
        if getattr(self, "_extractor", None) is None:
            config = self.data_config_
            extractor = FeatureExtractor(
                self.model_, self._compute_layers, self._fitted_pooling, config["mean"],
                config["std"],
            ).to(self.device_)
            # One blank image: checks the input size, measures widths, enables early stopping.
            extractor.probe(config["input_size"], self.device_)
            self._extractor = extractor
        return self._extractor

    def _feature_cache(self) -> FeatureCache | None:
        cache = self._current_cache()
        if cache is not None and self.backbone_.weights_id is None:
            warnings.warn(
                "cache is ignored: weights=None without an int random_state gives different "
                "weights at every fit, so features cannot be reused.", UserWarning, stacklevel=3,
            )
            return None
        if cache is not None and isinstance(self._fitted_tta, Integral):
            # An image's random views depend on where it sits in the batch stream, so features
            # computed for the misses of one call would differ from those of a full pass: a cache
            # would make the same image's features depend on what was cached before.
            warnings.warn(
                f"cache is ignored: tta={self._fitted_tta} draws random views, so an image's "
                "features depend on its place among the images embedded; use tta='flip' or "
                "'symmetric' to cache test-time augmented features.", UserWarning, stacklevel=3,
            )
            return None
        return cache

    def _views(self) -> list[View]:
        """The fitted ``tta``'s views (drawn afresh per call, so that a call is reproducible)."""
        return tta_views(self._fitted_tta, self.data_config_, augment=self._fitted_augment,
                         seed=self._tta_seed)

    def _current_cache(self) -> FeatureCache | None:
        """``cache_``, unless ``cache`` was changed after fit: ``None`` switches the cache off
        (a loaded model serves without one, no refit), another cache is used from now on."""
        if self.cache is None:
            return None
        if self.cache is self._fitted_cache or self.cache == self._fitted_cache:
            return self.cache_
        return as_cache(self.cache)

    def _layer_specs(self) -> list[dict]:
        """What each compute layer's key stands for: fitted state only, never current params."""
        config = self.data_config_
        common = {
            "architecture": self.backbone_.architecture_id,
            "weights": self.backbone_.weights_id,
            "preprocessing": {k: config[k] for k in sorted(config)},
            "resize": eval_resize_kernels(config),  # vectors made by Pillow's kernels differ
            "precision": self.precision_,
            "pooling": self._fitted_pooling,
        }
        if self._fitted_tta is not None:  # absent without TTA: plain features keep their keys
            common["tta"] = self._fitted_tta
        decoder = eval_jpeg_decoder(config, self.device_)
        if decoder != "pillow":  # absent on Pillow's path: its keys are kept
            common["decode"] = decoder  # nvJPEG's pixels differ from libjpeg's by a few levels
        return [{**common, "layer": name} for name in self._compute_layers]

    def _layer_keys(self) -> list[str]:
        return [layer_key(spec) for spec in self._layer_specs()]

    def transform(self, X: Any) -> np.ndarray:
        """Embed each image of ``X``.

        With a ``cache``, the features of new images are stored as they are computed, a chunk
        every few seconds: if the call is interrupted (Ctrl-C, a killed process, an unreadable
        image under ``on_error="raise"``), running it again computes only the rest.

        Parameters
        ----------
        X : array-like of images or of image paths
            ``(N, H, W)`` / ``(N, H, W, C)`` uint8 or [0, 1] float arrays, a ``(N, C, H, W)``
            tensor, or a list / ndarray / Series / one-column DataFrame of file paths, bytes,
            PIL images or single image arrays.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out), float32
            One row per input row, in order (NaN rows for unreadable images under
            ``on_error="nan"``).
        """
        blocks = list(self.iter_transform(X))
        if not blocks:
            return np.empty((0, self.n_features_out_), dtype=np.float32)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def iter_transform(self, X: Any) -> Iterator[np.ndarray]:
        """Embed ``X`` block by block: the rows of ``transform(X)``, in order, as computed.

        Memory stays bounded by a block (a few seconds of work, at most a few tens of MB)
        instead of growing with the number of images: write each block out as it comes, as
        ``skdeep extract`` does. ``X`` is checked now; the work is done as the blocks are read.

        Parameters
        ----------
        X : array-like of images or of image paths
            As for :meth:`transform`.

        Yields
        ------
        rows : ndarray of shape (n_block_rows, n_features_out), float32
            The next rows of ``transform(X)``. Unreadable images (``on_error="nan"``) are NaN
            rows, listed in one warning once the last block is read.

        Examples
        --------
        >>> import numpy as np
        >>> from skdeep import PretrainedCNNFeatures
        >>> images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
        >>> cnn = PretrainedCNNFeatures(image_size=32).fit()
        >>> sum(len(rows) for rows in cnn.iter_transform(images))
        5
        """
        check_is_fitted(self)
        dataset = self._dataset(X)
        cache = self._feature_cache()
        if cache is None:
            blocks = self._uncached_blocks(dataset)
        else:
            blocks = self._cached_blocks(dataset, cache)
        return self._warned(blocks, dataset)

    @staticmethod
    def _warned(blocks: Iterator[tuple[np.ndarray, dict[int, str]]],
                dataset: ImageDataset) -> Iterator[np.ndarray]:
        """The rows of ``blocks``; their unreadable rows (with their paths in ``dataset``) in one
        warning at the end."""
        errors: dict[int, str] = {}
        for rows, block_errors in blocks:
            errors.update(block_errors)
            yield rows
        warn_bad_rows(errors, dataset)

    def _uncached_blocks(self, dataset) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
        # The extractor may also compute the cache_layers of a cache set at fit: not returned.
        for rows, errors in self._dataset_chunks(self._get_extractor(), dataset, "embedding",
                                                   views=self._views()):
            yield rows[:, : self.n_features_out_], errors

    def _cached_blocks(self, dataset, cache: FeatureCache
                       ) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
        """Rows in input order: hits read from the cache, misses computed (all layers at once).

        Each chunk of misses is stored, every layer of its rows in one transaction, as soon as
        it comes back from the network, before its rows are handed on.
        """
        keys = image_keys(dataset.items)
        requested = len(self.layers_)
        stored = cache.contains(self._layer_keys()[:requested], [k for k in keys if k is not None],
                                self._compute_widths[:requested])
        misses = np.asarray([row for row, key in enumerate(keys) if key not in stored],
                            dtype=np.intp)
        cache.count(hits=len(keys) - len(misses), misses=len(misses))
        done = committed = 0  # rows handed on; misses computed and stored
        chunks = (self._dataset_chunks(self._get_extractor(), Subset(dataset, misses.tolist()),
                                       "embedding", views=self._views())
                  if len(misses) else ())
        try:
            for computed, errors in chunks:
                rows = misses[committed:committed + len(computed)]
                self._store(cache, [keys[row] for row in rows], computed, errors.keys(),
                            first=committed)
                committed += len(rows)
                errors = {int(misses[pos]): message for pos, message in errors.items()}
                yield from self._merged(dataset, cache, keys, done, rows[-1] + 1, rows,
                                        computed[:, : self.n_features_out_], errors)
                done = int(rows[-1]) + 1
            yield from self._merged(dataset, cache, keys, done, len(keys), misses[:0],
                                    np.empty((0, self.n_features_out_), np.float32), {})
        except KeyboardInterrupt as exc:
            exc.add_note(f"skdeep: the features of {committed} new image(s) were stored in the "
                         f"feature cache {cache.path}; the same call again computes only the rest.")
            raise

    def _merged(self, dataset, cache: FeatureCache, keys: list, start: int, stop: int,
                rows: np.ndarray, computed: np.ndarray, errors: dict[int, str]
                ) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
        """Rows ``start:stop`` in blocks of bounded size: ``rows`` from ``computed``, the others
        (hits) read from the cache."""
        step = max(1, _BLOCK_BYTES // (4 * self.n_features_out_))
        for begin in range(start, stop, step):
            end = min(begin + step, stop)
            block = np.empty((end - begin, self.n_features_out_), dtype=np.float32)
            low, high = np.searchsorted(rows, [begin, end])
            block[rows[low:high] - begin] = computed[low:high]
            hit = np.ones(end - begin, dtype=bool)
            hit[rows[low:high] - begin] = False
            hits = np.flatnonzero(hit) + begin
            block_errors = {row: errors[row] for row in rows[low:high].tolist() if row in errors}
            if len(hits):
                block[hits - begin], lost = self._read_hits(dataset, cache, keys, hits)
                block_errors.update(lost)
            yield block, block_errors

    def _read_hits(self, dataset, cache: FeatureCache, keys: list, hits: np.ndarray
                   ) -> tuple[np.ndarray, dict[int, str]]:
        """The cached rows of ``hits``; any gone since the lookup (evicted by another process,
        or a damaged cache moved aside) are computed again and stored."""
        hit_keys = [keys[row] for row in hits]
        found = [cache.get(key, hit_keys, width)
                 for key, width in zip(self._layer_keys(), self.feature_widths_)]
        rows = np.empty((len(hits), self.n_features_out_), dtype=np.float32)
        gone = []
        for pos, key in enumerate(hit_keys):
            if all(key in layer for layer in found):
                rows[pos] = np.concatenate([layer[key] for layer in found])
            else:
                gone.append(pos)
        if not gone:
            return rows, {}
        cache.count(hits=-len(gone), misses=len(gone))
        subset = Subset(dataset, hits[gone].tolist())
        computed, errors = self._run_dataset(self._get_extractor(), subset, desc="embedding",
                                             views=self._views())
        self._store(cache, [hit_keys[pos] for pos in gone], computed, errors.keys())
        rows[gone] = computed[:, : self.n_features_out_]
        return rows, {int(hits[gone[pos]]): message for pos, message in errors.items()}

    def _store(self, cache: FeatureCache, keys: list, computed: np.ndarray, bad: Iterable[int],
               first: int = 0) -> None:
        """Store the readable rows of ``computed`` (``bad`` counts from ``first``), all layers
        in one transaction."""
        skip = {pos - first for pos in bad}
        good = [pos for pos, key in enumerate(keys) if key is not None and pos not in skip]
        bounds = np.cumsum([0, *self._compute_widths])
        cache.put_layers({
            key: {keys[pos]: computed[pos, start:stop] for pos in good}
            for key, start, stop in zip(self._layer_keys(), bounds[:-1], bounds[1:])
        })

    def cache_info(self) -> CacheInfo | None:
        """Hits, misses and size of the feature cache (None without a cache).

        Returns
        -------
        info : CacheInfo or None
        """
        cache = self._current_cache() if hasattr(self, "cache_") else as_cache(self.cache)
        return None if cache is None else cache.info()

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names: ``<layer>_<i>`` for each column of each layer.

        Parameters
        ----------
        input_features : ignored
            Present for API compatibility (images have no input feature names).

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(feature_names(self.layers_, self.feature_widths_), dtype=object)

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # a copy (see CNNEstimatorMixin.__getstate__)
        state.pop("_extractor", None)
        model = state.pop("_model", None)
        backbone = state.get("backbone_")
        if model is not None and backbone is not None and not backbone.reproducible:
            state["_model_state"] = state_dict_to_bytes(model)
        return state
