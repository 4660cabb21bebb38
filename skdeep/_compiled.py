"""The frozen network as one compiled graph: the backbone cut after the deepest requested layer.

Eager PyTorch runs the network one Python-dispatched op at a time and reads layers through
hooks. For inference on a frozen network both costs can go: the backbone is traced to an FX
graph (timm's tracer, which also handles torchvision models), cut so that it returns exactly
the requested activations (everything after the deepest one is dead code and disappears),
pooled inside the graph, and handed to ``torch.compile``. On a CPU, inductor with *freezing*
folds the weights into the graph as constants and prepacks them for oneDNN, in bf16 where the
precision is bf16. No Python hook runs inside the graph, and several layers are still one
forward pass.

Shapes are fixed: :func:`skdeep._inference.predict_rows` pads the last batch of a job to the
batch size, so a job compiles once. Compiled code is cached by inductor on disk (see
:func:`compile_cache_dir`), so a second process pays a fraction of the cold compile.

What was measured and what was not: compile speed-ups, compile times and the break-even below
were measured on CPUs (see ``benchmarks/bench_extract.py``). On CUDA the same graph is compiled
with ``mode="reduce-overhead"`` (CUDA graphs: shapes are static) and tensors stay on the device;
this follows PyTorch's documented usage but has not been run here, as no GPU was available.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ._device import CUDA_GRAPH_LOCK, autocast, memory_format
from ._layers import LOGITS, PENULTIMATE, FeatureExtractor, pool_values, resolve_layers

COMPILE_OPTIONS = ("auto", True, False)
COMPILE_CACHE_ENV = "SKDEEP_COMPILE_CACHE"
_INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

# Break-even of compile="auto", measured with EfficientNet-Lite0 in bf16 on 2-core CPUs: a cold
# compile took 23-35 s on an AMX Xeon and about 15 s on an AVX512-BF16 EPYC, 6-9 s with a warm
# inductor cache; once compiled, it saved 1.7-4.3 ms per 224 px image (eager about 100 img/s,
# compiled 120-175 img/s on the Xeon; 250 and 500 img/s on the EPYC). The saving scales with the
# number of input pixels, so the rule counts pixels: compile when the pixels of a call times the
# saving per pixel exceed the expected compile time (at 224 px: about 10,000 images).
_EXPECTED_COMPILE_SECONDS = 20.0
_SAVING_PER_PIXEL_SECONDS = 2e-3 / (224 * 224)


class GraphUnavailableError(RuntimeError):
    """The network cannot be traced to one graph (data-dependent control flow, exotic modules)."""


def compile_cache_dir() -> Path:
    """The folder where compiled networks (``compile=``) are cached across processes.

    ``$SKDEEP_COMPILE_CACHE`` if set, else inductor's ``$TORCHINDUCTOR_CACHE_DIR`` if *you* set
    it, else ``~/.cache/skdeep/inductor`` (``$XDG_CACHE_HOME`` is respected). Inductor's own
    cache format lives there; deleting the folder only costs a cold compile.

    Importing ``torch._dynamo`` (as skdeep and ``torch.compile`` do) writes inductor's default,
    a folder under the temporary directory (``/tmp/torchinductor_<user>``), into
    ``$TORCHINDUCTOR_CACHE_DIR``. That value is torch's, not yours, and counts as unset: a
    cache in ``/tmp`` is lost whenever ``/tmp`` is cleaned, bringing back a cold compile.
    To keep inductor's temporary folder on purpose, set ``$SKDEEP_COMPILE_CACHE`` to it.

    Returns
    -------
    folder : pathlib.Path

    Examples
    --------
    >>> import os, skdeep
    >>> os.environ["SKDEEP_COMPILE_CACHE"] = "/tmp/skdeep-compiled"
    >>> str(skdeep.compile_cache_dir())
    '/tmp/skdeep-compiled'
    >>> del os.environ["SKDEEP_COMPILE_CACHE"]
    """
    explicit = os.environ.get(COMPILE_CACHE_ENV)
    if explicit:
        return Path(explicit)
    inductor = os.environ.get(_INDUCTOR_CACHE_ENV)
    if inductor and os.path.abspath(inductor) != os.path.abspath(_inductor_default_dir()):
        return Path(inductor)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skdeep" / "inductor"


def _inductor_default_dir() -> str:
    """The folder inductor writes into ``$TORCHINDUCTOR_CACHE_DIR`` when nobody set it."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch that keeps it elsewhere: its documented default
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    return default_cache_dir()


def compile_pays(setting: str | bool, n_images: int, input_size: Sequence[int],
                 device: torch.device) -> bool:
    """Whether to compile for a job of ``n_images`` at ``input_size`` under ``compile=setting``.

    ``"auto"`` compiles on CPUs when the expected saving exceeds the expected compile time (see
    the constants above for the measurement). On CUDA, where nothing was measured here, ``"auto"``
    stays eager: ask for ``compile=True``.
    """
    if setting is True or setting is False:
        return setting
    if device.type != "cpu":
        return False
    pixels = n_images * int(input_size[1]) * int(input_size[2])
    return pixels * _SAVING_PER_PIXEL_SECONDS > _EXPECTED_COMPILE_SECONDS


class GraphExtractor(nn.Module):
    """The same function as a :class:`~skdeep._layers.FeatureExtractor`, through one traced graph.

    ``uint8`` NCHW batch -> concatenated pooled activations of ``eager.layers``, equal to the
    eager extractor's output to floating-point rounding, without hooks: the traced backbone
    returns the requested activations as its outputs. The network's parameters are shared with
    ``eager`` (tracing copies no weights).

    Raises
    ------
    GraphUnavailableError
        If the network cannot be traced (data-dependent control flow, untraceable modules).
    """

    def __init__(self, eager: FeatureExtractor) -> None:
        super().__init__()
        self.normalize = eager.normalize
        self.layers = list(eager.layers)
        self.pooling = eager.pooling
        self.precision = "fp32"  # set by compile_extractor
        nodes = _return_nodes(eager.model, self.layers)
        try:
            graph = _feature_graph(eager.model, {node: name for name, node in nodes.items()})
        except Exception as exc:  # FX raises many types for untraceable code
            raise GraphUnavailableError(f"{type(eager.model).__name__} cannot be traced: {exc}") from exc
        # The traced module takes the training mode of whatever it was made or copied from:
        # inference needs BatchNorm's running statistics and no dropout, always.
        self.graph = graph.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> GraphExtractor:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images).contiguous(memory_format=memory_format(images.device))
        with autocast(images.device, self.precision):
            outputs = self.graph(x)
        return torch.cat([pool_values(outputs[name], self.pooling) for name in self.layers], dim=1)


def compile_extractor(extractor: GraphExtractor, device: torch.device,
                      precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` the extractor for inference on ``device``, at ``precision``.

    Compilation itself happens on the first call; :class:`CompiledForward` handles its failure.
    """
    # Inductor reads its cache folder from the environment when it compiles.
    os.environ[_INDUCTOR_CACHE_ENV] = str(compile_cache_dir())
    # Autocast inside the graph: with freezing, inductor folds BatchNorm into the convolutions in
    # float32 first and then folds the casts, so the weights are prepacked once in bf16 (casting
    # the module to bf16 beforehand folds in bf16 and loses accuracy).
    extractor.precision = precision
    extractor.eval()
    if device.type == "cuda":
        return torch.compile(extractor, mode="reduce-overhead", dynamic=False, fullgraph=True)
    return torch.compile(extractor, dynamic=False, fullgraph=True, options={"freezing": True})


class CompiledForward:
    """The compiled graph of an eager extractor, falling back (once, with a warning) to it.

    Compilation runs on the first call (inductor needs a C++ compiler and supports most, not all,
    ops). If the network cannot be traced, or that first call fails, the eager extractor (same
    outputs) is used from then on.

    Parameters
    ----------
    eager : FeatureExtractor
        The hooked extractor; also the fallback.
    device : torch.device
    precision : {"fp32", "bf16", "fp16"}
    announce : bool, default=False
        Say on stderr, in one line, that the first call compiles and for how long (a compile
        looks like a hang otherwise).
    """

    def __init__(self, eager: FeatureExtractor, device: torch.device, precision: str,
                 announce: bool = False) -> None:
        self.eager = eager
        self.what = type(eager.model).__name__
        self._lock = threading.Lock()
        self._ready = False
        self._announce = announce
        self._cpu = device.type == "cpu"
        # CUDA graphs replay into static output memory, which the next call overwrites: each
        # call starts a new step and its output is copied before the caller keeps it.
        self._cuda_graphs = device.type == "cuda"
        try:
            self.compiled = compile_extractor(GraphExtractor(eager), device, precision)
        except GraphUnavailableError as exc:
            warn_eager(self.what, exc)
            self.compiled = None

    @property
    def fixed_batch(self) -> bool:
        """Whether batches must all have one shape (padded): true while the graph is in use."""
        return self.compiled is not None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._ready and not self._cuda_graphs:
            return self.compiled(images)
        # The first call compiles: once, even when threads share the estimator. CUDA graphs
        # replay into shared memory, and a capture forbids CUDA work from other threads: one
        # call at a time, process-wide (CUDA_GRAPH_LOCK, which read-ahead threads take too).
        with CUDA_GRAPH_LOCK if self._cuda_graphs else self._lock:
            if self._ready:
                return self._run(images)
            if self.compiled is None:
                return self.eager(images)
            if self._announce:
                _say(compile_notice(self.what, images.shape))
            try:
                with _no_cuda_probe_warning(self._cpu):
                    output = self._run(images)
            except torch.OutOfMemoryError:
                raise  # not a failure to compile: the inference loop retries smaller batches
            except Exception as exc:  # inductor and dynamo raise many types
                warn_eager(self.what, exc)
                self.compiled = None
                return self.eager(images)
            self._ready = True
            return output

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        if not self._cuda_graphs:
            return self.compiled(images)
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(images).clone()


def compile_notice(what: str, batch_shape: Sequence[int]) -> str:
    """The one line said before a first compile: what, for which shape, how long, cached where."""
    shape = "x".join(str(int(side)) for side in batch_shape)
    # The cold and warm compile times measured for the "auto" rule (see the performance guide).
    return (f"compile: compiling {what} for batches of {shape}, once: 15-55 s the first time "
            f"(measured on 2-core CPUs), 6-9 s once cached in {compile_cache_dir()}")


def _say(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)  # above a progress bar in use, not through it


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _no_cuda_probe_warning(cpu: bool) -> Iterator[None]:
    """Silence "No CUDA runtime is found" while compiling for a CPU.

    Inductor imports ``torch.utils.cpp_extension``, which logs that warning on any machine with
    a CUDA toolkit folder but no GPU: noise when the job runs on the CPU by design.
    """
    if not cpu:
        yield
        return
    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = _DropMessage("No CUDA runtime is found")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def warn_eager(what: str, exc: BaseException) -> None:
    """The one warning given when compilation is not possible: why, and that results are equal."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    warnings.warn(
        f"compile: {what} runs eager (same outputs, slower) because it could not be compiled: "
        f"{type(exc).__name__}: {reason[:300]}. Pass compile=False to skip the attempt.",
        UserWarning, stacklevel=4,
    )


# --- tracing ------------------------------------------------------------------------------------


def _return_nodes(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """Requested layer name -> the qualified name of the FX node whose value it is.

    Module paths name their own nodes; "penultimate" is the node feeding the classifier and
    "logits" the node feeding the graph's output, found in one trace of the eval-mode network.
    """
    targets = dict(resolve_layers(model, layers))
    nodes: dict[str, str] = {}
    qualnames, graph = None, None
    for name in layers:
        path = targets[name]
        if name not in (LOGITS, PENULTIMATE) and path:
            nodes[name] = path
            continue
        if graph is None:
            qualnames, graph = _trace(model)
        if name == PENULTIMATE:  # the input of the classifier, not its output
            nodes[name] = qualnames[_input_of(graph, qualnames, path)]
        else:
            output = next(node for node in graph.nodes if node.op == "output")
            nodes[name] = qualnames[output.args[0]]
    return nodes


def _input_of(graph: torch.fx.Graph, qualnames: dict, path: str) -> torch.fx.Node:
    """The one node feeding module ``path``, which may be a leaf or a traced-through container."""
    def within(node: torch.fx.Node) -> bool:
        name = qualnames.get(node, "")
        return name == path or name.startswith(path + ".")

    first = next((node for node in graph.nodes if within(node)), None)
    inputs = [] if first is None else [node for node in first.all_input_nodes if not within(node)]
    if len(inputs) != 1:
        raise GraphUnavailableError(f"cannot find the one input of the classifier {path!r}")
    return inputs[0]


def _tracer_kwargs() -> dict:
    # timm's leaf modules and functions: what its own FX feature extraction does not trace into.
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()),
            "autowrap_functions": list(get_notrace_functions())}


def _trace(model: nn.Module) -> tuple[dict, torch.fx.Graph]:
    """One eval-mode trace: (node -> qualified name, graph)."""
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(**_tracer_kwargs())
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # FX raises many types for untraceable code
        raise GraphUnavailableError(f"{type(model).__name__} cannot be traced: {exc}") from exc
    return tracer.node_to_qualname, graph


def _feature_graph(model: nn.Module, return_nodes: dict[str, str]) -> nn.Module:
    from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(model, return_nodes=return_nodes,
                                    tracer_kwargs=_tracer_kwargs())
