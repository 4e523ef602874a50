"""Benchmark advtrade.synthetic: the streaming sampler and the exact closed forms.

Prints
* samples/second of ``TsiprasDistribution.batches`` and of the ``DataLoader``-ready stream at
  d = 1000 (10^6 examples, or 10^5 with ``--quick``), and the peak memory that streaming added;
* the time of one exact standard / robust accuracy evaluation at d = 10^6, of a batch of
  classifiers, of the exact SVM minimiser and of the trade-off frontier.

Peak memory is the growth of the resident-set high-water mark (``ru_maxrss`` from
``resource.getrusage``; tracemalloc does not see torch's allocator) over a whole streaming run,
each run in a fresh process (spawned, after a small warm-up sample) so that nothing earlier
has raised the mark. It is compared with the size of one batch and of the data held at once.

    python benchmarks/synthetic.py [--quick] [--batch-size 4096] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from advtrade.synthetic import TsiprasDistribution
from advtrade.threats import LinfBall


def maxrss_mib() -> float:
    """The process's peak resident set so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stream(n: int, batch_size: int, loader: bool, threads: int) -> tuple[float, float]:
    """(samples/second, MiB added to the peak RSS) for streaming n examples at d = 1000."""
    torch.set_num_threads(threads)
    dist = TsiprasDistribution(1000, 0.95)
    dist.sample(16, generator=torch.Generator().manual_seed(1))  # warm-up: allocator, kernels
    before = maxrss_mib()
    start = time.perf_counter()
    if loader:
        batches = DataLoader(dist.dataset(n, batch_size=batch_size, seed=0), batch_size=None)
    else:
        batches = dist.batches(n, batch_size, generator=torch.Generator().manual_seed(0))
    count, checksum = 0, 0.0
    for x, y in batches:
        count += x.shape[0]
        checksum += float(x[:, 0] @ y.to(x.dtype))  # touch the data: P(x1 = y) = p
    elapsed = time.perf_counter() - start
    assert count == n and abs(checksum / n - (2 * 0.95 - 1)) < 0.01
    return n / elapsed, maxrss_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^5 streamed examples, fewer runs")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 10**5 if args.quick else 10**6
    repeat = 3 if args.quick else 10
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 samples")

    print(f"\nstreaming {n:,} examples of dimension 1001 in batches of {args.batch_size}")
    held = n * 1001 * 4 / 2**20
    batch = args.batch_size * 1001 * 4 / 2**20
    for name, loader in (("dist.batches", False), ("DataLoader(dist.dataset)", True)):
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: a clean maxrss
            job = (n, args.batch_size, loader, torch.get_num_threads())
            rate, added = pool.apply(stream, job)
        print(
            f"  {name:26s} {rate:12,.0f} samples/s   peak RSS +{added:7.1f} MiB "
            f"(one batch {batch:.1f} MiB; all at once {held:,.0f} MiB)"
        )

    d = 10**6
    dist = TsiprasDistribution(d, 0.95)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d + 1, generator=gen, dtype=torch.float64)
    threat = LinfBall(2 * dist.eta, domain=None)
    print(f"\nexact evaluation at d = {d:,} (float64, median of {repeat})")
    rows = [
        ("standard_accuracy(w)", lambda: dist.standard_accuracy(w)),
        ("robust_accuracy(w, 0, linf)", lambda: dist.robust_accuracy(w, 0.0, threat)),
        ("hinge_loss(w, 0, linf)", lambda: dist.hinge_loss(w, 0.0, threat)),
    ]
    W = torch.randn(16, d + 1, generator=gen, dtype=torch.float64)
    rows.append(("robust_accuracy(W[16])", lambda: dist.robust_accuracy(W, 0.0, threat)))
    rows.append(("svm_minimizer() (norm 1)", lambda: dist.svm_minimizer()))
    rows.append(("svm_minimizer(linf 2eta)", lambda: dist.svm_minimizer(threat)))
    rows.append(("tradeoff_frontier(n=201)", lambda: dist.tradeoff_frontier()))
    for name, fn in rows:
        seconds = timed(fn, repeat if "svm" not in name else max(1, repeat // 3))
        print(f"  {name:28s} {seconds * 1e3:9.2f} ms")
    sol = dist.svm_minimizer()
    print(
        f"\nstandard SVM at d = {d:,}: w1 = {sol.w1:.4f}, sqrt(d)·v = {math.sqrt(d) * sol.v:.4f}, "
        f"standard {float(dist.standard_accuracy(sol.w)):.6f}, "
        f"robust {float(dist.robust_accuracy(sol.w, 0.0, threat)):.2e}"
    )


if __name__ == "__main__":
    main()
