"""Data-parallel scaling: examples per second of one PGD adversarial-training epoch.

Each configuration runs ``RobustTrainer`` in fresh processes (``torch.multiprocessing.spawn``,
gloo on CPU, nccl on GPUs) with a fixed batch per process (weak scaling), trains a warm-up
epoch, then reports the best of ``--repeats`` epochs (an epoch's time is the slowest rank's).
Printed ratios are over the single-process, unwrapped run: ``ddp x1`` is the wrapper's overhead
(goal ~1.0), ``ddp xN`` the speed-up (ideal N, i.e. efficiency 1.0). CPU milliseconds per
example (summed over processes) separate the method's overhead from contention on a shared
machine: ideal scaling keeps them constant.

    python benchmarks/scaling.py              # CPU: 1 and 2 processes, 1 thread each
    python benchmarks/scaling.py --quick      # fewer steps and repeats
    python benchmarks/scaling.py --device cuda  # 1 GPU with/without AMP, N processes on N GPUs
    python benchmarks/scaling.py --device cuda --model preact-resnet18 --channels-last

On CPU, processes x threads must not exceed the free cores, or the ratio measures contention.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset
from training import small_cnn  # benchmarks/training.py, beside this script

from advtrade import PGD, LinfBall
from advtrade.datasets import load_dataset
from advtrade.distributed import all_reduce, distributed_loader, init_distributed
from advtrade.models import preact_resnet18
from advtrade.training import AdversarialTraining, Callback, RobustTrainer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CpuClock(Callback):
    """This process's CPU seconds per epoch: unlike wall time, immune to other load on the box."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._start = time.process_time()

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.seconds.append(time.process_time() - self._start)


def _worker(rank: int, config: dict[str, Any], out: str) -> None:
    """One rank of one configuration; rank 0 writes the examples per second to ``out``."""
    world, ddp = config["world"], config["ddp"]
    torch.set_num_threads(config["threads"])
    if ddp:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(config["port"])}
        os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        backend = "nccl" if config["device"] == "cuda" else "gloo"
        device = init_distributed(backend, timeout=datetime.timedelta(seconds=300))
    else:
        device = torch.device(config["device"])
    torch.manual_seed(0)
    if config["model"] == "preact-resnet18":  # random CIFAR-shaped data: timing only
        g = torch.Generator().manual_seed(0)
        n = config["n"] if config["n"] < 10**9 else 8 * config["batch_size"] * world
        data = TensorDataset(torch.rand(n, 3, 32, 32, generator=g),
                             torch.randint(0, 10, (n,), generator=g))
        model = preact_resnet18(num_classes=10)
        eps = 8 / 255
    else:
        split = load_dataset(config["dataset"], seed=0)
        data = TensorDataset(split.x_train[: config["n"]], split.y_train[: config["n"]])
        c, h, _ = split.input_shape
        model = small_cnn(c, h, split.num_classes)
        eps = 0.1
    if ddp:
        loader = distributed_loader(data, config["batch_size"], drop_last=True)
    else:
        gen = torch.Generator().manual_seed(0)
        loader = DataLoader(data, config["batch_size"], shuffle=True, generator=gen, drop_last=True)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    objective = AdversarialTraining(PGD(LinfBall(eps), steps=config["steps"]))
    trainer = RobustTrainer(
        model, opt, objective, ddp=ddp, amp=config["amp"], progress=None, seed=rank,
        channels_last=config["channels_last"],
    )
    clock = CpuClock()
    trainer.callbacks.append(clock)
    history = trainer.fit(loader, 1 + config["repeats"])
    examples = len(loader) * config["batch_size"] * (world if ddp else 1)  # full batches only
    best = min(history.column("time")[1:])
    cpu = all_reduce(torch.tensor(min(clock.seconds[1:]), dtype=torch.float64)).item()
    if rank == 0:
        result = {
            "examples_per_s": examples / best,
            "seconds": best,
            "cpu_ms": 1e3 * cpu / examples,
        }
        Path(out).write_text(json.dumps(result))
    if ddp:
        dist.destroy_process_group()


def run(config: dict[str, Any]) -> dict[str, float]:
    """Examples per second of ``config`` (spawned in fresh processes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        config = {**config, "port": _free_port()}
        nprocs = config["world"] if config["ddp"] else 1
        mp.spawn(_worker, args=(config, out), nprocs=nprocs, join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer PGD steps and repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    parser.add_argument("--model", default="small-cnn", choices=["small-cnn", "preact-resnet18"],
                        help="preact-resnet18 trains on random CIFAR-shaped data")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--processes", type=int, default=None, help="CPU: 2; GPU: #GPUs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default 10; 3 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs (3; 1 quick)")
    parser.add_argument("--n", type=int, default=None, help="training examples (default all)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU")
    world = args.processes or (torch.cuda.device_count() if cuda else 2)
    base = {
        "device": args.device,
        "dataset": args.dataset,
        "model": args.model,
        "channels_last": args.channels_last,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "steps": args.steps or (3 if args.quick else 10),
        "repeats": args.repeats or (1 if args.quick else 3),
        "n": args.n or 10**9,
        "amp": False,
    }
    configs = {"plain x1": {"world": 1, "ddp": False}, "ddp x1": {"world": 1, "ddp": True}}
    if world > 1:
        configs[f"ddp x{world}"] = {"world": world, "ddp": True}
    if cuda:
        configs |= {f"{k} amp": {**v, "amp": True} for k, v in configs.items()}
    print(
        f"PGD-{base['steps']} AT epoch, {args.model} on "
        f"{'random 3x32x32' if args.model == 'preact-resnet18' else args.dataset}, "
        f"batch {args.batch_size}/process, "
        f"{args.device}, {args.threads} thread(s)/process, {os.cpu_count()} CPU cores"
    )
    results = {name: run({**base, **cfg}) for name, cfg in configs.items()}
    ref = results["plain x1"]["examples_per_s"]
    head = f"{'config':<14} {'examples/s':>11} {'epoch s':>8} {'vs plain x1':>12}"
    print(f"{head} {'efficiency':>11} {'CPU ms/example':>15}")
    for name, res in results.items():
        procs = configs[name]["world"]
        ratio = res["examples_per_s"] / ref
        print(
            f"{name:<14} {res['examples_per_s']:>11.1f} {res['seconds']:>8.3f} "
            f"{ratio:>12.2f} {ratio / procs:>11.2f} {res['cpu_ms']:>15.3f}"
        )


if __name__ == "__main__":
    main()
