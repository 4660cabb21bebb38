"""Does compiling the fine-tuning step pay on a CPU? Eager against torch.compile, side by side.

Issue 10, item 4: adopt a compiled training step under ``compile=`` only if a typical fit is
faster end to end. A typical fit here: 1,600 images at 96 px, batches of 32, 8 epochs, i.e.
400 optimisation steps of FineTunedCNNClassifier's default (EfficientNet-Lite0, every layer
trained, AdamW, bf16 autocast where the CPU has it).

Both copies of the network start from the same weights and train on the same ready-made
batches (Fashion-MNIST, preprocessed once, so decoding is not measured):

  eager      the training step as skdeep runs it: autocast forward, cross-entropy, backward,
             optimizer step
  compiled   the same step with the network wrapped in torch.compile (inductor, default mode;
             freezing is for inference only: trained weights cannot be folded into the graph)

Printed: the compile cost (the first compiled steps less an eager step), the steady time per
step of each in interleaved rounds (medians), and the end-to-end estimate of the typical fit:
compile + 400 steps, against 400 eager steps. Validation and prediction passes are not
included (they already use the compiled inference graph under compile=).

    python benchmarks/bench_compile_train.py            # 8 rounds of 10 steps
    python benchmarks/bench_compile_train.py --quick    # 2 rounds of 3 steps
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image

from _data import load_fashion_mnist
from skdeep._device import autocast
from skdeep._preprocessing import geometric_transform
from skdeep.classifier import FineTunedCNNClassifier

TYPICAL_STEPS = 400  # 1,600 images / 32 per batch * 8 epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    rounds, steps = (2, 3) if args.quick else (8, 10)
    torch.manual_seed(0)

    images, labels = load_fashion_mnist("train", args.batch_size * steps)
    # A one-epoch fit on a few images gives the classifier's own network, head and precision.
    clf = FineTunedCNNClassifier(image_size=args.image_size, epochs=1, max_steps=None,
                                 early_stopping=False,
                                 validation_fraction=0.0, compile=False, random_state=0)
    clf.fit(images[:64], labels[:64])
    # The fitted timm model with its new head, after the classifier's normalisation: the same
    # computation as its training step, without the hooks that read the embedding (which only
    # prediction needs, and which would make dynamo break the graph).
    extractor = clf._get_network()
    network = torch.nn.Sequential(extractor.normalize, clf.model_)
    device, precision = clf.device_, clf.precision_
    transform = geometric_transform(clf.data_config_)
    batches = torch.stack([transform(Image.fromarray(image).convert("RGB")) for image in images])
    batches = list(zip(batches.split(args.batch_size),
                       torch.as_tensor(labels, dtype=torch.long).split(args.batch_size)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, precision {precision}, "
          f"{args.image_size} px, batches of {args.batch_size}")

    def trainer(module: torch.nn.Module):
        module.train().requires_grad_(True)
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = module(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    eager = trainer(copy.deepcopy(network))
    compiled_module = copy.deepcopy(network)
    compiled = trainer(torch.compile(compiled_module))

    def run(step, n: int) -> float:
        start = time.perf_counter()
        for x, y in batches[:n]:
            step(x, y)
        return (time.perf_counter() - start) / n

    eager_first = run(eager, 2)  # warm-up: oneDNN kernels for these shapes
    start = time.perf_counter()
    run(compiled, 2)  # compiles forward and backward on the first step
    compile_seconds = time.perf_counter() - start - 2 * eager_first
    eager_times, compiled_times = [], []
    for _ in range(rounds):  # interleaved, so that the neighbours disturb both alike
        eager_times.append(run(eager, steps))
        compiled_times.append(run(compiled, steps))
    e, c = statistics.median(eager_times), statistics.median(compiled_times)
    print(f"\ncompile (forward + backward, first steps less eager)  {compile_seconds:8.1f} s")
    print(f"eager step      median of {rounds} rounds of {steps}         {1000 * e:8.1f} ms")
    print(f"compiled step   median of {rounds} rounds of {steps}         {1000 * c:8.1f} ms")
    print(f"ratio eager / compiled, steady state                {e / c:8.2f}")
    eager_fit, compiled_fit = TYPICAL_STEPS * e, compile_seconds + TYPICAL_STEPS * c
    print(f"\ntypical fit ({TYPICAL_STEPS} steps): eager {eager_fit:.0f} s, compiled "
          f"{compiled_fit:.0f} s (compile included): ratio {eager_fit / compiled_fit:.2f} "
          f"(adopt only if > 1)")


if __name__ == "__main__":
    main()
