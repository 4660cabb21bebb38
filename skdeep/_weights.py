"""Loading weights safely, from local files or from the usual hub caches, and failing fast offline.

Every checkpoint goes through ``torch.load(..., weights_only=True)`` or safetensors: skdeep never
unpickles arbitrary objects. Downloads land where torchvision and timm put them (the torch hub
cache and the Hugging Face cache), so weights already fetched by either library are reused, and a
machine without internet gets an immediate error that says how to bring the weights there.
``HF_HUB_OFFLINE`` is respected: when it is set, the Hugging Face Hub is never contacted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

_NETWORK_PROBE_TIMEOUT = 3.0
_PATCH_LOCK = threading.Lock()


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable from here."""


def looks_like_path(weights: Any) -> bool:
    """Whether a ``weights=`` value names a local file rather than a weights tag like "DEFAULT".

    A value is a path by its form alone: an ``os.PathLike``, or a string that ends with a weights
    suffix (``.pth``, ``.pt``, ``.bin``, ``.safetensors``, ``.ckpt``) or contains a directory
    separator. Whether a file of that name exists is not asked, so that a file called
    ``DEFAULT`` or ``IMAGENET1K_V1`` in the working directory never replaces the weights that tag
    names; write ``"./DEFAULT"`` to mean such a file.
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return weights.lower().endswith(WEIGHT_SUFFIXES) or any(sep in weights for sep in separators)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch checkpoint, never unpickling objects.

    A checkpoint that wraps its weights (``{"state_dict": ...}`` or ``{"model": ...}``, as Lightning
    and many training scripts write) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; the message is what matters
        raise ValueError(
            f"could not read {str(path)!r} as a weights-only checkpoint ({exc}). skdeep loads "
            "checkpoints with torch.load(weights_only=True): save a state_dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict of tensors.")
    return state


@functools.lru_cache(maxsize=1 << 16)
def _file_sha256(path: str, device: int, inode: int, size: int, mtime_ns: int,
                 ctime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (weights or images), memoised in-process.

    The memo is keyed on the path, device, inode, size, modification time and status-change time
    (ctime). Size and mtime alone are not enough: ``cp -p``, ``rsync -t`` or ``os.utime`` give a
    rewritten file its old mtime, and coarse timestamps hide quick edits. The ctime cannot be set
    by any of these (every write or ``utime`` moves it to the current time), and a file replaced
    by a rename has another inode.
    """
    stat = os.stat(path)
    return _file_sha256(os.fspath(Path(path).resolve()), stat.st_dev, stat.st_ino, stat.st_size,
                        stat.st_mtime_ns, stat.st_ctime_ns)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state_dict's tensors."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def host_reachable(url: str, timeout: float = _NETWORK_PROBE_TIMEOUT) -> bool:
    """Whether the host of ``url`` resolves and accepts a TCP connection within ``timeout``."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


_NO_DOWNLOAD = ("or weights=None for random initialisation. The bundled backbone "
                "'efficientnet_lite0' works offline.")


def offline_error(what: str, url: str, cache_file: str | os.PathLike,
                  reason: object = None) -> WeightsUnavailableError:
    """The error raised when a torch hub checkpoint (torchvision's) cannot be downloaded.

    It says where the file goes and how to get it there: the torch hub cache holds the
    checkpoint as one plain file, under the name of the URL.
    """
    host = urllib.parse.urlparse(url).hostname
    because = f" ({reason})" if reason is not None else ""
    return WeightsUnavailableError(
        f"Could not download the pretrained weights for {what}: this machine cannot reach "
        f"{host}{because}, and they are not in the torch hub cache. On a machine with internet, "
        f"download {url} and copy that file to {os.fspath(cache_file)} (the cache moves with "
        "TORCH_HOME); or pass weights='/path/to/file.pth' (or .safetensors), " + _NO_DOWNLOAD
    )


def hf_offline_error(what: str, repo_id: str, reason: object = None) -> WeightsUnavailableError:
    """The error raised when a Hugging Face Hub repo's weights (timm's) are neither cached nor
    downloadable: why (HF_HUB_OFFLINE, or the hub is unreachable) and the real steps.

    The Hugging Face cache is not a folder of weights files: each repo is a folder of content
    addressed ``blobs/``, ``refs/`` naming the revision and ``snapshots/<revision>/`` of symlinks
    to the blobs. So the steps are ``hf download`` there and a copy of the whole repo folder, or
    the file alone passed as ``weights=``.
    """
    from huggingface_hub import constants

    folder = hf_cache_folder(repo_id)
    if hf_offline_set():
        why = "HF_HUB_OFFLINE is set, so the Hugging Face Hub is not asked"
    else:
        why = f"this machine cannot reach the Hugging Face Hub ({constants.ENDPOINT})"
    because = f" ({reason})" if reason is not None else ""
    local = repo_id.split("/")[-1]
    return WeightsUnavailableError(
        f"Could not get the pretrained weights for {what}: {why}{because}, and they are not in "
        f"the Hugging Face cache {constants.HF_HUB_CACHE}. Either: (1) on a machine with "
        f"internet, run `hf download {repo_id} --cache-dir hf-cache` (`huggingface-cli download` "
        f"with huggingface_hub < 1.0), then copy the whole folder hf-cache/{folder.name} (its "
        f"blobs/, refs/ and snapshots/, keeping the symlinks: cp -a, rsync -a or tar) to "
        f"{folder}, or point HF_HUB_CACHE at a cache that holds it; or (2) download the file "
        f"alone (`hf download {repo_id} model.safetensors --local-dir {local}`) and pass "
        f"weights='{local}/model.safetensors'; " + _NO_DOWNLOAD
    )


def torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` (and so torchvision) caches ``url``."""
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


@contextlib.contextmanager
def weights_only_downloads() -> Iterator[None]:
    """Make torchvision's builders read downloaded checkpoints with ``weights_only=True``.

    torchvision builders call ``weights.get_state_dict(progress=..., check_hash=True)``, which
    forwards to ``torch.hub.load_state_dict_from_url`` whose default is ``weights_only=False``.
    Within this context the same call is made with ``weights_only=True``; the builder's own
    per-architecture adjustments (class count, aux heads, input transforms) still apply.
    """
    import torchvision.models._api as tv_api

    with _PATCH_LOCK:
        original = tv_api.load_state_dict_from_url
        tv_api.load_state_dict_from_url = functools.partial(original, weights_only=True)
        try:
            yield
        finally:
            tv_api.load_state_dict_from_url = original


def hf_cached_file(repo_id: str) -> str | None:
    """The locally cached weights file of a Hugging Face Hub repo, without touching the network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def hf_cache_folder(repo_id: str) -> Path:
    """The folder of a Hugging Face Hub repo in the local cache (``models--<org>--<name>``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def hf_offline_set() -> bool:
    """Whether ``HF_HUB_OFFLINE`` says not to ask the Hugging Face Hub anything.

    huggingface_hub reads the variable once, when imported; it is read here too, so that setting
    it later (in a notebook) is respected as well.
    """
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE``, never probed then) or
    unreachable from here."""
    from huggingface_hub import constants

    return hf_offline_set() or not host_reachable(constants.ENDPOINT)
