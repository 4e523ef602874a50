"""The GPU figures in one command: training and attack throughput on CUDA, and DDP scaling.

1. ``training.py`` on CUDA with a PreAct ResNet-18 on CIFAR-shaped batches: images per second of
   standard, PGD-K, fast, free and TRADES training, float32 against float16 autocast, and peak
   memory (``channels_last``).
2. Attack throughput: PGD-10 (ℓ∞, ε = 8/255) images per second at float32 and under float16
   autocast, with and without early stopping, and one AutoAttack (standard) pass on a batch.
3. ``scaling.py --device cuda --model preact-resnet18``: one process plain and under DDP, and N
   processes on N GPUs (weak scaling; the speed-up over one GPU, ideal N).

    python benchmarks/gpu.py            # needs CUDA; about 10 minutes on one modern GPU
    python benchmarks/gpu.py --quick    # fewer methods, repeats and steps
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

import advtrade as at
from advtrade.models import preact_resnet18

HERE = Path(__file__).resolve().parent


def attack_throughput(batch_size: int, quick: bool) -> None:
    """Images per second of PGD-10 and of AutoAttack on a randomly initialised ResNet, labels
    set to its own predictions (clean accuracy 1, robust accuracy about 0: early stopping and
    AutoAttack's later stages show their best case; on a robust model early stopping saves
    about the fooled fraction)."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = preact_resnet18(num_classes=10).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = at.LinfBall(8 / 255)
    runs = {
        "PGD-10": (at.PGD(threat, steps=10), False),
        "PGD-10, fp16": (at.PGD(threat, steps=10), True),
        "PGD-10 early stop, fp16": (at.PGD(threat, steps=10, early_stop=True), True),
    }
    if not quick:
        runs["AutoAttack standard, fp16"] = (at.AutoAttack(threat, progress=None), True)
    print(f"\nattacks on a PreAct ResNet-18, batch {batch_size}, channels_last")
    for name, (attack, amp) in runs.items():
        g = torch.Generator().manual_seed(0)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            attack(model, x, y, generator=g)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            attack(model, x, y, generator=g)
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"  {name:<28} {batch_size / seconds:10.1f} img/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (none is visible to torch)")
    print(f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch "
          f"{torch.__version__}, advtrade {at.__version__}")
    quick = ["--quick"] if args.quick else []
    common = ["--device", "cuda", "--batch-size", str(args.batch_size)]
    subprocess.run([sys.executable, str(HERE / "training.py"), *common, "--amp",
                    "--channels-last", "--batches", "8", *quick], check=True)
    attack_throughput(args.batch_size, args.quick)
    subprocess.run([sys.executable, str(HERE / "scaling.py"), "--device", "cuda", "--model",
                    "preact-resnet18", "--channels-last", "--batch-size",
                    str(args.batch_size), *quick], check=True)


if __name__ == "__main__":
    main()
