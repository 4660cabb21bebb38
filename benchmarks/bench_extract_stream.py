"""`skdeep extract` over many small PNGs: peak memory, throughput, and the cost of resumability.

Images: the first 2,000 and 20,000 Fashion-MNIST training images (28x28) written as PNG files
to a temporary folder. Every run is a fresh `python -m skdeep extract` process; its peak
resident memory comes from the kernel (os.wait4's ru_maxrss), its time is the wall time.

1. Peak RSS and throughput for 2,000 and 20,000 images, to .npy and to .parquet. Rows stream to
   the output's partial file as they are computed, so the peak must not grow with the number of
   images beyond the output's own size (paths and keys aside, it should barely grow at all).
   Goal: peak(20,000) - peak(2,000) < size of the 20,000-row output.
2. The overhead of committing as the job goes: `extract --cache DIR -o OUT.parquet` of 2,000
   images into an empty cache, as shipped (a chunk committed to the cache and to the partial
   output every 2 s, each synced to disk), against the same command committing once at the
   end (the run held as one chunk, as before issue #14). Best of the repeats, alternating. On
   a shared machine the wall times vary by more than the effect, so the child also times every
   commit (the cache's put_layers and the partial output's write, sync included): the extra
   time spent committing, relative to the run, is the overhead that does not depend on the
   neighbours. (A commit every 2 s costs the same share of a run of any length, so 2,000
   images tell it.)
   Goal: incremental within 3 % of committing once.

Settings: --image-size 64, --compile off (compiling would add the same constant to every run),
precision and batch size as the CLI chooses them.

    python benchmarks/bench_extract_stream.py            # 2,000 and 20,000 images, 3 repeats
    python benchmarks/bench_extract_stream.py --quick    # 200 and 2,000 images, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from PIL import Image

from _data import load_fashion_mnist

SETTINGS = ["--image-size", "64", "--compile", "off", "--no-progress"]

# Runs the skdeep command as `python -m skdeep` does, timing its commits (written to the file
# argv[2] at exit); "once" makes the whole run one chunk, committed once.
_CHILD = """
    import atexit, json, runpy, sys, time
    from skdeep import _inference, _outputs, cache

    if sys.argv[1] == "once":
        _inference._FLUSH_EVERY, _inference._FLUSH_SECONDS = 10**12, float("inf")
    timings = {"commit_seconds": 0.0, "commits": 0}

    def timed(function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings["commit_seconds"] += time.perf_counter() - start
                timings["commits"] += 1
        return run

    cache.FeatureCache.put_layers = timed(cache.FeatureCache.put_layers)
    _outputs.ResumableOutput.write = timed(_outputs.ResumableOutput.write)
    report = sys.argv[2]
    atexit.register(lambda: open(report, "w").write(json.dumps(timings)))
    sys.argv = ["skdeep", *sys.argv[3:]]
    runpy.run_module("skdeep", run_name="__main__")
"""


def write_pngs(folder: Path, n: int) -> Path:
    """``n`` Fashion-MNIST images as PNG files, 1,000 per sub-folder."""
    images, _ = load_fashion_mnist("train", n)
    for i, pixels in enumerate(images):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sub / f"{i:05d}.png")
    return folder


def run_extract(argv: list[str], mode: str = "incremental") -> dict:
    """One `skdeep extract` in a new process: wall and CPU seconds, peak RSS (MiB), commits."""
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        start = time.perf_counter()
        # stderr to a file, not a pipe: nothing can block on it
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CHILD), mode,
                                  str(timings), *argv], stderr=log)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory and CPU time
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            log.seek(0)
            sys.exit(f"skdeep extract failed ({child.returncode}):\n{log.read()}")
        commits = json.loads(timings.read_text())
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024, **commits}  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 images, 2 repeats")
    args = parser.parse_args()
    sizes = (200, 2000) if args.quick else (2000, 20000)
    repeats = 2 if args.quick else 3

    with tempfile.TemporaryDirectory(prefix="skdeep-bench-stream-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        folders = {n: write_pngs(tmp / f"png{n}", n) for n in sizes}
        print(f"wrote {sum(sizes):,} PNGs in {time.perf_counter() - start:.0f} s; settings: "
              f"{' '.join(SETTINGS)}", flush=True)

        print("\n1. peak RSS and throughput (one run each)")
        peaks = {}
        for suffix in (".npy", ".parquet"):
            for n in sizes:
                out = tmp / f"out{n}{suffix}"
                run = run_extract(["extract", str(folders[n]), "-o", str(out), *SETTINGS])
                size = out.stat().st_size / 2**20
                peaks[suffix, n] = (run["peak_mib"], size)
                print(f"  {n:>6,} images -> {suffix:<8}  {n / run['seconds']:7.0f} img/s  "
                      f"peak RSS {run['peak_mib']:6.0f} MiB  output {size:6.1f} MiB", flush=True)
        for suffix in (".npy", ".parquet"):
            (low, _), (high, output) = peaks[suffix, sizes[0]], peaks[suffix, sizes[1]]
            ok = high - low < output
            print(f"  {suffix}: peak grows by {high - low:.0f} MiB from {sizes[0]:,} to "
                  f"{sizes[1]:,} images, output {output:.0f} MiB (goal: less) "
                  f"{'OK' if ok else 'MISSED'}")

        n = 2000
        print(f"\n2. incremental commits vs one commit at the end ({n:,} images, empty --cache, "
              f".parquet, best of {repeats})", flush=True)
        best = {"incremental": {}, "once": {}}
        for repeat in range(repeats):
            for mode in ("once", "incremental") if repeat % 2 else ("incremental", "once"):
                run = run_extract(["extract", str(folders[n]), "-o", str(tmp / f"{mode}.parquet"),
                                   "--cache", str(tmp / f"cache-{mode}-{repeat}"), "--overwrite",
                                   *SETTINGS], mode)
                if run["seconds"] < best[mode].get("seconds", float("inf")):
                    best[mode] = run
                print(f"  {mode:<12} {run['seconds']:6.1f} s wall  "
                      f"{run['cpu_seconds']:6.1f} s CPU  {n / run['seconds']:5.0f} img/s  "
                      f"{run['commits']:4d} commits taking "
                      f"{run['commit_seconds']:5.2f} s  peak RSS {run['peak_mib']:5.0f} MiB",
                      flush=True)
        incremental, once = best["incremental"], best["once"]
        wall = incremental["seconds"] / once["seconds"] - 1
        cpu = incremental["cpu_seconds"] / once["cpu_seconds"] - 1
        extra = (incremental["commit_seconds"] - once["commit_seconds"]) / once["seconds"]
        print(f"  best wall time: {100 * wall:+.1f} %; CPU time {100 * cpu:+.1f} % "
              "(both dominated by the machine's other load)")
        print("  time spent committing, incremental minus once, over the run: "
              f"{100 * extra:+.2f} % (goal <= +3 %) {'OK' if extra <= 0.03 else 'MISSED'}")


if __name__ == "__main__":
    main()
