"""What every skdeep estimator shares: parameters, runtime resolution, inputs, tags, pickling.

Both :class:`~skdeep.PretrainedCNNFeatures` and :class:`~skdeep.FineTunedCNNClassifier` inherit
from :class:`CNNEstimatorMixin`, so the backbone vocabulary, device and precision logic, input
handling and persistence rules are written once.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator, Sequence
from enum import Enum
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from torch import nn
from torch.utils.data import Dataset, Subset

from ._augment import POLICY_NAMES, TTA_NAMES, AveragedViews, View
from ._compiled import CompiledForward, compile_pays
from ._defaults import ON_ERROR, PRECISIONS
from ._device import auto_batch_size, resolve_device, resolve_precision
from ._inference import iter_row_chunks, predict_rows
from ._inputs import ImageDataset, warn_bad_rows
from ._jpeg import JpegOnDevice
from ._layers import FeatureExtractor
from ._preprocessing import DeferredResize, TensorEvalTransform, geometric_transform

COMMON_PARAMETER_CONSTRAINTS: dict[str, list] = {
    "backbone": [str, HasMethods(["forward", "state_dict"])],
    "weights": [str, os.PathLike, Enum, None],
    "image_size": [Interval(Integral, 8, None, closed="left"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "device": [str, torch.device],
    "precision": [StrOptions(set(PRECISIONS))],
    "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
    "on_error": [StrOptions(set(ON_ERROR))],
    "progress": ["boolean"],
    "random_state": ["random_state"],
    "compile": [StrOptions({"auto"}), "boolean"],
}

#: The augmentation policy and the test-time views: the same vocabulary in both estimators.
VIEW_PARAMETER_CONSTRAINTS: dict[str, list] = {
    "augment": [StrOptions(set(POLICY_NAMES)), "boolean", callable],
    "tta": [StrOptions(set(TTA_NAMES)), Interval(Integral, 2, None, closed="left"), None],
}


def seed_of(random_state: Any) -> int | None:
    """An int seed for torch from sklearn's random_state (None stays None: not reproducible)."""
    if random_state is None or isinstance(random_state, Integral):
        return None if random_state is None else int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def state_dict_to_bytes(module: nn.Module) -> bytes:
    """A module's state_dict, moved to the CPU, serialised with torch.save."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
    return buffer.getvalue()


def state_dict_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_dict_to_bytes`, CPU-mapped and weights-only (no arbitrary objects)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def resized_on_device(dataset: Dataset, device: torch.device | None = None
                      ) -> tuple[Dataset, Any]:
    """``dataset`` with its resize (and decoding) left to the network's device, and the batch
    preparation that does it there.

    When every image has one size (X is an array or tensor of images) and the eval resize runs
    on tensors, the dataset yields the images at their own size and the inference loop resizes
    each batch in one call on the device (:class:`~skdeep._preprocessing.DeferredResize`),
    instead of one call per image; the pixels are the same. When X holds files or bytes and
    ``device`` decodes JPEG (CUDA: nvJPEG, see :class:`~skdeep._jpeg.JpegOnDevice`), the
    workers read the JPEGs' bytes and the loop decodes, resizes and crops each batch on the
    device; every other row is read by Pillow as before. Otherwise ``(dataset, None)``: the
    loop's default preparation, a copy to the device.
    A :class:`~torch.utils.data.Subset` keeps its rows.
    """
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    transform = getattr(inner, "transform", None)
    if not (isinstance(inner, ImageDataset) and isinstance(transform, TensorEvalTransform)):
        return dataset, None
    if isinstance(inner.items, np.ndarray):
        deferred = DeferredResize(transform)
        view = inner.view(deferred, input_size=(*inner.items.shape[1:3], 3))  # HWC, blank rows
        prepare = deferred.batch
    elif inner.has_encoded and JpegOnDevice.applies(device):
        decoder = JpegOnDevice(transform)
        view = inner.view(decoder)
        prepare = functools.partial(decoder.batch, view)
    else:
        return dataset, None
    return (Subset(view, dataset.indices) if isinstance(dataset, Subset) else view), prepare


class CNNEstimatorMixin:
    """Shared behaviour of skdeep estimators (used with ``BaseEstimator``)."""

    @property
    def network_built(self) -> bool:
        """Whether this object holds its network now (built on first use; a pickle leaves it out
        when it can be rebuilt, and unpickling rebuilds it lazily)."""
        return getattr(self, "_model", None) is not None

    def _resolve_runtime(self) -> None:
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)

    def _dataset(self, X: Any, *, train: bool = False, targets: Any = None,
                 on_error: str | None = None) -> ImageDataset:
        config = self.data_config_
        return ImageDataset(
            X,
            transform=self._transform(train),
            input_size=config["input_size"],
            on_error=self.on_error if on_error is None else on_error,
            targets=targets,
        )

    def image_dataset(self, X: Any) -> ImageDataset:
        """``X`` as this fitted estimator's network reads it at prediction time.

        Row ``i`` is ``(uint8 tensor (C, H, W), error message)``: the image decoded, resized and
        centre-cropped by the weights' evaluation preprocessing (not yet normalised), or a
        blank tensor and its message for an unreadable row under ``on_error="nan"``. Its
        ``transform`` has a ``resized_size`` method saying how large an image is resized before
        the crop. :mod:`skdeep.explain` runs the network over it to draw activation maps.

        Parameters
        ----------
        X : array-like of images or of image paths

        Returns
        -------
        dataset : torch Dataset
        """
        return self._dataset(X)

    def _transform(self, train: bool):
        # The group TTA policies need an exactly centred crop (see GeometricTransform).
        return geometric_transform(self.data_config_, train=train,
                                   exact_centre=not train and self.tta in TTA_NAMES)

    def _inference_batch_size(self) -> int:
        """``batch_size``, or for ``None`` the size that runs fastest on ``device_``."""
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch_size(self.device_, self.data_config_["input_size"])

    def _inference_forward(self, eager: FeatureExtractor, n_images: int):
        """``eager``, or its compiled graph when ``compile`` says it pays for ``n_images``.

        Once compiled (for this fitted network), the graph serves every later call, whatever its
        size: the cost is paid. ``compile=False`` set afterwards goes back to eager.
        """
        if self.compile is False:
            return eager
        compiled = self.__dict__.get("_compiled")
        if compiled is not None and compiled.eager is eager:
            return compiled
        if not compile_pays(self.compile, n_images, self.data_config_["input_size"], self.device_):
            return eager
        # A first compile takes seconds with nothing moving: said in one line when the user asked
        # for compile=True, or for progress or verbose output.
        announce = self.compile is True or self.progress or bool(getattr(self, "verbose", 0))
        self._compiled = CompiledForward(eager, self.device_, self.precision_, announce=announce)
        return self._compiled

    def _run_dataset(self, eager: FeatureExtractor, dataset, desc: str, *,
                     views: Sequence[View] = (), log_proba_from: int | None = None
                     ) -> tuple[np.ndarray, dict[int, str]]:
        """Rows of the network over ``dataset``, with this estimator's runtime settings.

        Returns ``(rows, {row: error})``. The network is ``eager`` or, under ``compile``, its
        compiled graph, fed batches of one shape (see :func:`~skdeep._inference.predict_rows`);
        with several test-time ``views`` its rows are averaged over them (see
        :meth:`_view_forward`).
        """
        dataset, prepare = resized_on_device(dataset, self.device_)
        forward, options = self._view_forward(eager, len(dataset), views, log_proba_from)
        return predict_rows(forward, dataset, desc=desc, prepare=prepare, **options)

    def _dataset_chunks(self, eager: FeatureExtractor, dataset, desc: str, *,
                        views: Sequence[View] = (), log_proba_from: int | None = None
                        ) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
        """:meth:`_run_dataset` chunk by chunk, as they come back to the host.

        Yields ``(rows, {dataset row: error})`` for consecutive rows (see
        :func:`~skdeep._inference.iter_row_chunks`); the network is chosen now, not at the
        first chunk.
        """
        dataset, prepare = resized_on_device(dataset, self.device_)
        forward, options = self._view_forward(eager, len(dataset), views, log_proba_from)
        return iter_row_chunks(forward, dataset, desc=desc, prepare=prepare, **options)

    def _view_forward(self, eager: FeatureExtractor, n_images: int, views: Sequence[View],
                      log_proba_from: int | None) -> tuple[Any, dict[str, Any]]:
        """What the inference loop runs for test-time ``views``, and the loop's options.

        With at most one view, the network alone (eager or compiled). With several, one batched
        forward pass per view, averaged (:class:`~skdeep._augment.AveragedViews`; columns from
        ``log_proba_from`` on are logits, averaged as probabilities). ``compile=`` counts every
        view's images, and each view keeps the batch's shape and dtype, so that one compiled
        graph serves them all.
        """
        forward = self._inference_forward(eager, n_images * max(1, len(views)))
        options = self._inference_options(forward)
        if len(views) > 1:
            return AveragedViews(forward, views, log_proba_from=log_proba_from), options
        return forward, options

    def _inference_options(self, forward) -> dict[str, Any]:
        """The runtime arguments of the inference loop for ``forward`` (eager or compiled)."""
        return {
            "device": self.device_,
            "precision": self.precision_,
            "batch_size": self._inference_batch_size(),
            "num_workers": self.num_workers,
            "progress": self.progress,
            "fixed_batch": isinstance(forward, CompiledForward) and forward.fixed_batch,
        }

    def _predict_rows(self, eager: FeatureExtractor, X: Any, desc: str) -> np.ndarray:
        """Rows of the network over X; unreadable images (on_error="nan") warned about, NaN."""
        dataset = self._dataset(X)
        rows, errors = self._run_dataset(eager, dataset, desc)
        warn_bad_rows(errors, dataset)
        return rows

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is a collection of images (paths, arrays of images, PIL images), not a 2-D table.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.requires_fit = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []
        return tags

    def __getstate__(self) -> dict:
        # Since Python 3.11 object.__getstate__ returns the live __dict__: copy it, so that
        # pickling (joblib, loky, Dask) never strips the network off the estimator being pickled.
        state = dict(super().__getstate__())
        state.pop("_compiled", None)  # compiled code is never pickled: rebuilt when next used
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "device_" in self.__dict__:
            # A model fitted on a GPU box may be unpickled on a CPU-only machine: re-resolve.
            self.device_ = resolve_device(self.device if self.device == "auto" else self.device_)
            self.precision_ = resolve_precision(self.precision, self.device_)
