"""Feature extraction speed and linear-probe quality, measured side by side in one run.

Throughput (same images, same machine, same run):
  skdeep      PretrainedCNNFeatures.transform, precision="auto" (bf16 on CPUs with native bf16)
  raw         the bare timm model on ready-made batches, same precision and batch size: the
              model limit
  raw fp32    the bare model on ready-made batches in fp32, NCHW, same batch size (plain PyTorch)
  per-image   one image at a time through preprocessing and the model in fp32 with autograd
              on (embetter's TimmEncoder loop), and the same loop under no_grad
Goals: skdeep / raw >= 0.95, skdeep / raw fp32 >= 2.5 (on a CPU with bf16), skdeep / per-image >= 3.

Compiled inference (compile=), same images and machine, each job in a fresh process so that the
compile is paid as a user pays it:
  eager        compile=False, the eager bf16 network
  compiled     compile=True, steady state (after its compile)
  end to end   compile=True for 2,000 and 20,000 images, compile included, with a cold inductor
               cache (an empty folder) and a warm one (the same folder again)
  auto         compile="auto" (the default) for 100 and 20,000 images, and what it chose
Goals: compiled steady / eager >= 1.6; skdeep default / per-image fp32 loop >= 5; auto on 100
images no slower than eager by more than 5 %; auto on 20,000 >= 1.3x eager, compile included.

Linear probe: Fashion-MNIST, first 2,000 test images, 5-fold LogisticRegression on default
skdeep features (224 px), for precision="auto" and "fp32", next to raw pixels.
Goals: >= 0.85, and auto within 0.5 point of fp32.

    python benchmarks/bench_extract.py            # full run
    python benchmarks/bench_extract.py --quick    # a smoke run with fewer images
    python benchmarks/bench_extract.py --no-compile-jobs   # skip the end-to-end compile jobs
    python benchmarks/bench_extract.py --batch-sweep       # eager and compiled at batches 8-32
    python benchmarks/bench_extract.py --stall             # a new estimator's first call (item 3)
    python benchmarks/bench_extract.py --pipeline          # the input pipeline (issue 25)

Input pipeline (--pipeline): 96 uint8 arrays of 224 px and the same images as 96 JPEG files,
EfficientNet-Lite0, precision "auto", batches of 8, median of 7 interleaved rounds, one process.
The network alone on ready uint8 batches (eager, and skdeep's compiled graph) is the limit;
skdeep's transform is timed with today's tensor path and with timm's PIL transform per image
(the path it replaced, switched back on in the same run).
Goals: compiled transform of arrays >= 0.85x the compiled network; eager >= 0.95x the eager
network; files no slower than through the PIL path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _data import load_fashion_mnist
from skdeep import PretrainedCNNFeatures
from skdeep._device import autocast
from skdeep._preprocessing import GeometricTransform, TensorEvalTransform, geometric_transform


def best_of(repeats: int, run) -> float:
    """Best wall time of ``repeats`` runs (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(images: np.ndarray, repeats: int) -> tuple[dict[str, float], int]:
    cnn = PretrainedCNNFeatures().fit()  # batch_size=None: the size that runs fastest here
    batch_size = cnn._inference_batch_size()
    extractor = cnn._get_extractor()
    model, precision, device = cnn.model_, cnn.precision_, cnn.device_
    transform = geometric_transform(cnn.data_config_)
    batches = torch.stack([transform(Image.fromarray(image).convert("RGB")) for image in images])
    batches = batches.split(batch_size)

    def raw(precision_: str, layout: torch.memory_format) -> None:
        model.to(memory_format=layout)
        with torch.inference_mode(), autocast(device, precision_):
            for batch in batches:
                model(extractor.normalize(batch).contiguous(memory_format=layout))
        model.to(memory_format=torch.channels_last)

    def per_image(grad: bool) -> None:
        # embetter's TimmEncoder: one image at a time through the model in fp32, autograd on
        # (it calls model(x).detach() without no_grad). grad=False is the same loop, tidied.
        model.to(memory_format=torch.contiguous_format)
        model.requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            for image in images:
                x = transform(Image.fromarray(image).convert("RGB"))[None]
                model.forward_head(model.forward_features(extractor.normalize(x)),
                                   pre_logits=True).detach()
        model.requires_grad_(False)
        model.to(memory_format=torch.channels_last)

    # Warm-up: oneDNN builds its kernels on first use of each shape and layout.
    cnn.transform(images[:batch_size])
    raw(precision, torch.channels_last), raw("fp32", torch.contiguous_format)
    n = len(images)
    seconds = {
        f"skdeep transform ({precision})": best_of(repeats, lambda: cnn.transform(images)),
        f"raw model forward ({precision}, NHWC)": best_of(
            repeats, lambda: raw(precision, torch.channels_last)),
        "raw model forward (fp32, NCHW)": best_of(
            repeats, lambda: raw("fp32", torch.contiguous_format)),
        "one image at a time (fp32, autograd)": best_of(1, lambda: per_image(True)),
        "one image at a time (fp32, no_grad)": best_of(1, lambda: per_image(False)),
    }
    return {name: n / s for name, s in seconds.items()}, batch_size


def linear_probe(n: int) -> dict[str, float]:
    images, labels = load_fashion_mnist("test", n)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    scores = {"raw pixels": cross_val_score(probe, images.reshape(n, -1) / 255.0, labels, cv=folds)}
    for precision in ("auto", "fp32"):
        cnn = PretrainedCNNFeatures(precision=precision).fit()
        features = cnn.transform(images)  # frozen, data-independent: embed once, then CV the probe
        scores[f"skdeep features ({cnn.precision_})"] = cross_val_score(probe, features, labels, cv=folds)
    return {name: float(s.mean()) for name, s in scores.items()}


def job(n: int, setting: str) -> dict:
    """One end-to-end embedding job (fit + transform of n images), run in this process."""
    images, _ = load_fashion_mnist("train", n)
    start = time.perf_counter()
    cnn = PretrainedCNNFeatures(compile={"on": True, "off": False}.get(setting, setting)).fit()
    cnn.transform(images)
    compiled = cnn.__dict__.get("_compiled")
    return {"seconds": time.perf_counter() - start,
            "compiled": compiled is not None and compiled.fixed_batch}


def job_in_fresh_process(n: int, setting: str, inductor_cache: str) -> dict:
    environment = dict(os.environ, SKDEEP_COMPILE_CACHE=inductor_cache)
    environment.pop("TORCHINDUCTOR_CACHE_DIR", None)
    output = subprocess.run(
        [sys.executable, __file__, "--job", str(n), setting], env=environment, check=True,
        capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def steady_state(images: np.ndarray, repeats: int) -> dict[str, float]:
    """Images/s of eager and compiled transform after warm-up (compile excluded)."""
    rates = {}
    for name, setting in (("eager", False), ("compiled", True)):
        cnn = PretrainedCNNFeatures(compile=setting).fit()
        cnn.transform(images[:64])  # warm-up; compiles the graph for the compiled one
        rates[name] = len(images) / best_of(repeats, lambda: cnn.transform(images))
    return rates


def batch_sweep(images: np.ndarray, sizes: tuple[int, ...], rounds: int = 3) -> None:
    """Steady-state images/s of eager and compiled transform for several batch sizes at 224 px.

    All estimators are built and warmed up first, then timed in interleaved rounds, so that
    whatever else the machine does touches every configuration alike; medians are printed.
    """
    runs = {}
    for batch_size in sizes:
        for setting in (False, True):
            cnn = PretrainedCNNFeatures(compile=setting, batch_size=batch_size).fit()
            cnn.transform(images[:batch_size])  # warm-up (and the compile)
            runs[batch_size, setting] = (cnn, [])
    for _ in range(rounds):
        for (batch_size, setting), (cnn, rates) in runs.items():
            start = time.perf_counter()
            cnn.transform(images)
            rates.append(len(images) / (time.perf_counter() - start))
    print(f"\nBatch size at 224 px, {len(images)} images, median of {rounds} interleaved rounds")
    for batch_size in sizes:
        eager, compiled = (float(np.median(runs[batch_size, s][1])) for s in (False, True))
        print(f"  batch {batch_size:>3}: eager {eager:7.1f} images/s, compiled {compiled:7.1f} "
              f"images/s ({compiled / eager:.2f}x)")


def stall_check(images: np.ndarray, compile_: bool) -> None:
    """Issue 10, item 3: does a new estimator in a process stall on its first timed call?

    Four estimators in turn (layer penultimate, blocks.5, penultimate, blocks.5), each warmed up
    with a 16-image transform, then timed on the images twice: a stall shows as a first call
    much slower than the second.
    """
    print(f"\nNew estimators in one process, compile={compile_}, {len(images)} images at 224 px "
          "(first and second timed call)")
    for layer in ("penultimate", "blocks.5", "penultimate", "blocks.5"):
        cnn = PretrainedCNNFeatures(layer=layer, compile=compile_).fit()
        cnn.transform(images[:16])
        rates = []
        for _ in range(2):
            start = time.perf_counter()
            cnn.transform(images)
            rates.append(len(images) / (time.perf_counter() - start))
        print(f"  {layer:<12} {rates[0]:7.1f} then {rates[1]:7.1f} images/s "
              f"(first / second {rates[0] / rates[1]:.2f})", flush=True)


def compile_jobs(sizes: tuple[int, int]) -> None:
    small, large = sizes
    with tempfile.TemporaryDirectory() as folder:
        cache = os.path.join(folder, "inductor")
        runs = [
            (f"eager, {small:,} images", small, "off"),
            (f"compiled, {small:,} images, cold cache", small, "on"),
            (f"compiled, {small:,} images, warm cache", small, "on"),
            ("eager, 100 images", 100, "off"),
            ("auto, 100 images", 100, "auto"),
            (f"eager, {large:,} images", large, "off"),
            (f"auto, {large:,} images, warm cache", large, "auto"),
            (f"compiled, {large:,} images, cold cache", large, "on"),
        ]
        results = {}
        for label, n, setting in runs:
            if "cold" in label:
                cache = os.path.join(folder, f"inductor-{len(results)}")  # an empty folder
            results[label] = result = job_in_fresh_process(n, setting, cache)
            chose = " (compiled)" if result["compiled"] else " (eager)"
            print(f"  {label:<40} {result['seconds']:7.1f} s  {n / result['seconds']:7.1f} images/s"
                  f"{chose if setting == 'auto' else ''}", flush=True)

    def ratio(fast: str, slow: str) -> float:
        return results[slow]["seconds"] / results[fast]["seconds"]

    print(f"  end to end compiled / eager, {small:,} images: cold "
          f"{ratio(f'compiled, {small:,} images, cold cache', f'eager, {small:,} images'):.2f}x, "
          f"warm {ratio(f'compiled, {small:,} images, warm cache', f'eager, {small:,} images'):.2f}x")
    print(f"  auto / eager, 100 images               "
          f"{ratio('auto, 100 images', 'eager, 100 images'):.2f}x   (goal >= 0.95)")
    print(f"  auto / eager, {large:,} images (warm)      "
          f"{ratio(f'auto, {large:,} images, warm cache', f'eager, {large:,} images'):.2f}x   "
          "(goal >= 1.3)")
    print(f"  compiled / eager, {large:,} images (cold)  "
          f"{ratio(f'compiled, {large:,} images, cold cache', f'eager, {large:,} images'):.2f}x")


def input_pipeline(rounds: int = 7, n: int = 96, batch_size: int = 8) -> None:
    """Issue 25's table: skdeep's transform next to its own network on ready batches."""
    small, _ = load_fashion_mnist("test", n)
    images = np.stack([np.asarray(Image.fromarray(image).convert("RGB").resize((224, 224)))
                       for image in small])
    folder = tempfile.mkdtemp()
    files = []
    for i, image in enumerate(images):
        files.append(os.path.join(folder, f"{i}.jpg"))
        Image.fromarray(image).save(files[-1], quality=90)
    runs: dict[str, tuple] = {}
    pil = {"supports": staticmethod(lambda config: False)}
    for compile_ in (False, True):
        cnn = PretrainedCNNFeatures(compile=compile_, batch_size=batch_size).fit()
        cnn.transform(images[:batch_size * 2])  # warm-up, and the compile
        network = cnn.__dict__.get("_compiled") if compile_ else cnn._get_extractor()
        ready = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().split(batch_size)
        name = "compiled" if compile_ else "eager"

        def limit(network=network, ready=ready, cnn=cnn):
            with torch.inference_mode(), autocast(cnn.device_, cnn.precision_):
                for batch in ready:
                    network(batch)

        runs[f"{name} network, uint8 batches ready"] = (limit, None)
        runs[f"{name} transform, arrays"] = (lambda cnn=cnn: cnn.transform(images), None)
        runs[f"{name} transform, arrays, PIL path"] = (lambda cnn=cnn: cnn.transform(images), pil)
        runs[f"{name} transform, JPEG files"] = (lambda cnn=cnn: cnn.transform(files), None)
        runs[f"{name} transform, JPEG files, PIL path"] = (lambda cnn=cnn: cnn.transform(files),
                                                          pil)
    config = PretrainedCNNFeatures().fit().data_config_
    tensor_transform, timm_pil = geometric_transform(config), GeometricTransform(config)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    runs["timm's eval transform alone, PIL, per image"] = (
        lambda: [timm_pil(Image.fromarray(image)) for image in images], None)
    runs["tensor eval transform, one uint8 batch"] = (lambda: tensor_transform.batch(batch), None)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (run, patch) in runs.items():
            saved = {key: TensorEvalTransform.__dict__[key] for key in patch or {}}
            for key, value in (patch or {}).items():
                setattr(TensorEvalTransform, key, value)
            try:
                start = time.perf_counter()
                run()
                rates[name].append(n / (time.perf_counter() - start))
            finally:
                for key, value in saved.items():
                    setattr(TensorEvalTransform, key, value)
    median = {name: float(np.median(values)) for name, values in rates.items()}
    print(f"\nInput pipeline: {n} images of 224 px, batches of {batch_size}, median of {rounds} "
          "interleaved rounds")
    for name, rate in median.items():
        print(f"  {name:<46} {rate:8.1f} images/s")
    for name in ("eager", "compiled"):
        limit = median[f"{name} network, uint8 batches ready"]
        goal = 0.95 if name == "eager" else 0.85
        print(f"  {name} transform of arrays / {name} network      "
              f"{median[f'{name} transform, arrays'] / limit:5.2f}x  (goal >= {goal}; PIL path "
              f"{median[f'{name} transform, arrays, PIL path'] / limit:.2f}x)")
        print(f"  {name} JPEG files: tensor path / PIL path        "
              f"{median[f'{name} transform, JPEG files'] / median[f'{name} transform, JPEG files, PIL path']:5.2f}x"
              "  (goal >= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    parser.add_argument("--no-compile-jobs", action="store_true",
                        help="skip the end-to-end compile jobs (fresh processes, minutes)")
    parser.add_argument("--batch-sweep", action="store_true",
                        help="only compare batch sizes 8, 16 and 32, eager and compiled")
    parser.add_argument("--stall", action="store_true",
                        help="only check that a new estimator does not stall (issue 10, item 3)")
    parser.add_argument("--pipeline", action="store_true",
                        help="only the input pipeline table (issue 25)")
    parser.add_argument("--job", nargs=2, metavar=("N", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:  # one end-to-end job in a fresh process: print its result as JSON
        print(json.dumps(job(int(args.job[0]), args.job[1])))
        return
    n_speed, n_probe, repeats = (64, 200, 1) if args.quick else (256, 2000, 3)
    if args.batch_sweep:
        batch_sweep(load_fashion_mnist("test", n_speed)[0], (8, 16, 32))
        return
    if args.pipeline:
        input_pipeline()
        return
    if args.stall:
        for compile_ in (False, True):
            stall_check(load_fashion_mnist("test", 128)[0], compile_)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

    images, _ = load_fashion_mnist("test", n_speed)
    rates, batch_size = throughput(images, repeats=repeats)
    print(f"\nThroughput, {n_speed} Fashion-MNIST images at 224 px, EfficientNet-Lite0, "
          f"batches of {batch_size} (best of {repeats})")
    for name, rate in rates.items():
        print(f"  {name:<37} {rate:8.1f} images/s")
    skdeep_rate, raw_same, raw_fp32, embetter, per_image = rates.values()
    print(f"  ratio skdeep / raw same precision     {skdeep_rate / raw_same:6.2f}   (goal >= 0.95)")
    print(f"  ratio skdeep / raw fp32               {skdeep_rate / raw_fp32:6.2f}   (goal >= 2.5)")
    print(f"  ratio skdeep / embetter's loop        {skdeep_rate / embetter:6.2f}   (goal >= 3.0)")
    print(f"  ratio skdeep / per-image, no_grad     {skdeep_rate / per_image:6.2f}")

    steady = steady_state(images, repeats)
    print(f"\nCompiled inference, steady state (compile excluded), same {n_speed} images")
    print(f"  eager transform                       {steady['eager']:8.1f} images/s")
    print(f"  compiled transform                    {steady['compiled']:8.1f} images/s")
    print(f"  ratio compiled / eager                {steady['compiled'] / steady['eager']:6.2f}   "
          "(goal >= 1.6)")
    print(f"  ratio compiled / embetter's loop      {steady['compiled'] / embetter:6.2f}   "
          "(goal >= 5: the default on a large job)")
    if not args.no_compile_jobs:
        sizes = (200, 2_000) if args.quick else (2_000, 20_000)
        print("\nEnd-to-end jobs at 224 px, each in a fresh process (fit + transform)")
        compile_jobs(sizes)

    accuracy = linear_probe(n_probe)
    print(f"\nLinear probe, first {n_probe} Fashion-MNIST test images, 5-fold LogisticRegression")
    for name, value in accuracy.items():
        print(f"  {name:<37} {value:.4f}")
    values = list(accuracy.values())
    print(f"  auto - fp32 difference                {100 * (values[1] - values[2]):+.2f} points "
          "(goal: within 0.5)")


if __name__ == "__main__":
    main()
