"""Feature extraction speed and linear-probe quality, measured side by side in one run.

Throughput (same images, same machine, same run):
  skdeep      PretrainedCNNFeatures.transform, precision="auto" (bf16 on CPUs with native bf16)
  raw         the bare timm model on ready-made batches, same precision and batch size: the
              model limit
  raw fp32    the bare model on ready-made batches in fp32, NCHW, same batch size (plain PyTorch)
  per-image   one image at a time through preprocessing and the model in fp32 with autograd
              on (embetter's TimmEncoder loop), and the same loop under no_grad
Goals: skdeep / raw >= 0.95, skdeep / raw fp32 >= 2.5 (on a CPU with bf16), skdeep / per-image >= 3.

Linear probe: Fashion-MNIST, first 2,000 test images, 5-fold LogisticRegression on default
skdeep features (224 px), for precision="auto" and "fp32", next to raw pixels.
Goals: >= 0.85, and auto within 0.5 point of fp32.

    python benchmarks/bench_extract.py            # full run
    python benchmarks/bench_extract.py --quick    # a smoke run with fewer images
"""

from __future__ import annotations

import argparse
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
from skdeep._preprocessing import geometric_transform


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    args = parser.parse_args()
    n_speed, n_probe, repeats = (64, 200, 1) if args.quick else (256, 2000, 3)
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

    accuracy = linear_probe(n_probe)
    print(f"\nLinear probe, first {n_probe} Fashion-MNIST test images, 5-fold LogisticRegression")
    for name, value in accuracy.items():
        print(f"  {name:<37} {value:.4f}")
    values = list(accuracy.values())
    print(f"  auto - fp32 difference                {100 * (values[1] - values[2]):+.2f} points "
          "(goal: within 0.5)")


if __name__ == "__main__":
    main()
