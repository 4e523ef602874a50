"""Data-parallel training: two gloo processes on CPU held against single-process references.

The two-process tests spawn ranks with ``torch.multiprocessing`` (gloo on 127.0.0.1, one thread
each); each rank writes what it ends with to files that the test process compares. Attacks are
also checked under autocast (the adversarial point stays float32 and inside the ball) and under
``torch.compile`` (one graph, no recompilation between calls).
"""

from __future__ import annotations

import copy
import datetime
import gc
import io
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from advtrade import FGSM, PGD, TRADES, AdversarialTraining, L2Ball, LinfBall, evaluate
from advtrade.distributed import (
    ShardSampler,
    all_gather_object,
    all_reduce,
    distributed_loader,
    get_rank,
    get_world_size,
    init_distributed,
    rank_seed,
    reduce_report,
    shard_loader,
    wrap_ddp,
)
from advtrade.training import RobustTrainer, TrainContext, read_checkpoint

from .conftest import SmallCNN, free_port

WORLD = 2
EVAL_ATTACK = PGD(LinfBall(0.1), steps=3, random_start=False)  # deterministic: exact comparisons
ATTACKS = {
    "pgd-linf": PGD(LinfBall(0.1), steps=3),
    "pgd-l2": PGD(L2Ball(0.5), steps=3),
    "fgsm": FGSM(LinfBall(0.1)),
    "pgd-as-is": PGD(LinfBall(0.1), steps=2, mode="as_is"),
}


def _model() -> nn.Module:
    """The shared CNN, narrow (many processes share few cores) and with BatchNorm, so buffer
    synchronisation is exercised too."""
    return SmallCNN(batchnorm=True, width=8)


def _spawn(fn: Any, *args: Any) -> None:
    """Run ``fn(rank, port, *args)`` in WORLD fresh processes (one thread each)."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(fn, args=(free_port(), *args), nprocs=WORLD, join=True)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def _init(rank: int, port: int) -> None:
    """Join a gloo group through torchrun's environment variables, as a launched script does."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    device = init_distributed("gloo", timeout=datetime.timedelta(seconds=60))
    assert device == torch.device("cpu") and get_rank() == rank and get_world_size() == WORLD


def _finish() -> None:
    """Leave the group once every rank is done, then exit without interpreter finalisation.

    About one run in ten on torch 2.13 CPU, a worker aborted after all its results were written
    ("terminate called without an active exception"): gloo worker threads still hold tensors
    when Python finalises (pytorch/pytorch#179291 describes this teardown race). The results are
    on disk and checked by the test; ``os._exit`` skips only the racy finalisation.
    """
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _flat_parameters(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _same_on_all_ranks(t: Tensor) -> bool:
    return all(torch.equal(t, other) for other in all_gather_object(t))


# ----------------------------------------------------------------------- two-process workers
def _attack_checks(rank: int, data: dict[str, Tensor]) -> None:
    """Attacks on a DDP model equal attacks on the plain module, leave parameters, gradients and
    modes alone, issue no collective (only rank 0 attacks; a collective would hang the other
    rank into the timeout) and leave DDP's reducer working: the next steps still all-reduce."""
    torch.manual_seed(0)
    plain = _model()
    ddp = wrap_ddp(copy.deepcopy(plain))
    x, y = data["x_train"][:64], data["y_train"][:64]
    for p in ddp.parameters():
        p.grad = torch.full_like(p, 7.0)
    state = copy.deepcopy(ddp.module.state_dict())
    if rank == 0:
        for name, attack in ATTACKS.items():
            ddp.train(name == "pgd-as-is")
            got = attack(ddp, x, y, generator=torch.Generator().manual_seed(1))
            want = attack(plain, x, y, generator=torch.Generator().manual_seed(1))
            assert torch.equal(got, want), name
            assert ddp.training == (name == "pgd-as-is") and ddp.module.training == ddp.training
        assert all(torch.equal(state[k], v) for k, v in ddp.module.state_dict().items())
        assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in ddp.parameters())
        assert all(p.requires_grad for p in ddp.parameters())
    # Two training steps through the wrapper: the gradient is the mean over both ranks' halves.
    ddp.train()
    plain.train()
    halves = [(x[:32], y[:32]), (x[32:], y[32:])]
    for step in range(2):
        ddp.zero_grad(set_to_none=True)
        plain.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ddp(halves[rank][0]), halves[rank][1]).backward()
        ref = sum(nn.functional.cross_entropy(plain(xh), yh) for xh, yh in halves) / WORLD
        ref.backward()
        for p, q in zip(ddp.parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
        if rank == 0 and step == 0:
            FGSM(LinfBall(0.1))(ddp, x, y)  # between steps, on one rank only
    # TRADES runs two forwards through the wrapper before one backward: the weights stay equal
    # (BatchNorm statistics differ after train-mode forwards until the trainer syncs them).
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ctx = TrainContext(ddp, opt, generator=torch.Generator().manual_seed(rank))
    for _ in range(2):
        TRADES(PGD(LinfBall(0.1), steps=2), beta=1.0).train_step(*halves[rank], ctx)
    assert _same_on_all_ranks(_flat_parameters(ddp))


def _run(data: dict[str, Tensor], epochs: int, **fit: Any) -> tuple[RobustTrainer, Any]:
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    objective = AdversarialTraining(PGD(LinfBall(0.1), steps=2))
    kwargs: dict[str, Any] = {"ddp": True, "progress": "plain", "seed": 3}
    resume = fit.pop("resume", None)
    if resume is None:
        trainer = RobustTrainer(model, opt, objective, **kwargs)
    else:
        trainer = RobustTrainer.resume(resume, model, opt, objective, **kwargs)
    train = distributed_loader(TensorDataset(data["x_train"], data["y_train"]), 32, seed=1)
    test = shard_loader(TensorDataset(data["x_test"], data["y_test"]), 75)
    history = trainer.fit(train, epochs, test, eval_attack=EVAL_ATTACK, **fit)
    return trainer, history


def _train_worker(rank: int, port: int, out: str, data: dict[str, Tensor]) -> None:
    _init(rank, port)
    _attack_checks(rank, data)
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        trainer, history = _run(data, 2)  # uninterrupted; progress="plain" prints on rank 0
        printed = sys.stderr.getvalue()
    finally:
        sys.stderr = stderr
    test_set = TensorDataset(data["x_test"], data["y_test"])
    report = trainer.evaluate(shard_loader(test_set, 75), {"clean": None, "pgd": EVAL_ATTACK})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.evaluate(DataLoader(test_set, batch_size=75), {"clean": None})
    assert any("not sharded" in str(w.message) for w in caught)
    torch.save(
        {
            "state": trainer.model.module.state_dict(),
            "history": history.to_list(),
            "per_example": report.per_example,
            "counts": report.counts,
            "n": report.n,
            "printed": printed,
        },
        Path(out) / f"full{rank}.pt",
    )
    _run(data, 1, checkpoint_dir=Path(out) / "ckpt")  # interrupted after one epoch
    _finish()


def _resume_worker(rank: int, port: int, out: str, data: dict[str, Tensor]) -> None:
    _init(rank, port)
    trainer, history = _run(data, 2, resume=Path(out) / "ckpt" / "last.pt")
    state = {"state": trainer.model.module.state_dict(), "history": history.to_list()}
    torch.save(state, Path(out) / f"resumed{rank}.pt")
    _finish()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> dict[str, Any]:
    """An uninterrupted 2-epoch run, a 1-epoch run with a checkpoint and its resumption in a
    second 2-process group; returns what each rank wrote."""
    out = tmp_path_factory.mktemp("ddp")
    data = {
        "x_train": digits.x_train[:384],
        "y_train": digits.y_train[:384],
        "x_test": digits.x_test[:150],
        "y_test": digits.y_test[:150],
    }
    start = time.perf_counter()
    _spawn(_train_worker, str(out), data)
    _spawn(_resume_worker, str(out), data)
    files = {p.stem: torch.load(p, weights_only=False) for p in out.glob("*.pt")}
    return {"out": out, "data": data, "seconds": time.perf_counter() - start, **files}


def test_ranks_end_identical_and_histories_are_global(two_process_run: dict[str, Any]) -> None:
    """Both ranks hold the same weights and BatchNorm buffers, and the same history (global
    loss, accuracies and time); the model learned something."""
    r0, r1 = two_process_run["full0"], two_process_run["full1"]
    assert r0["state"].keys() == r1["state"].keys()
    assert all(torch.equal(v, r1["state"][k]) for k, v in r0["state"].items())
    assert r0["history"] == r1["history"] and len(r0["history"]) == 2
    assert r0["history"][-1]["eval_clean_acc"] > 0.5
    assert r0["printed"].count("epoch ") == 2 and r1["printed"] == ""  # progress on rank 0 only


def test_reported_accuracies_equal_a_single_process_evaluation(
    two_process_run: dict[str, Any],
) -> None:
    """The history's evaluation and the reduced report equal one process evaluating the final
    model on the whole test set: counts summed over shards, per-example outcomes in order."""
    run, data = two_process_run, two_process_run["data"]
    model = _model()
    model.load_state_dict(run["full0"]["state"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loader = DataLoader(TensorDataset(data["x_test"], data["y_test"]), batch_size=75)
        single = evaluate(model, loader, {"clean": None, "pgd": EVAL_ATTACK})
    finally:
        torch.set_num_threads(threads)
    last = run["full0"]["history"][-1]
    assert last["eval_clean_acc"] == single["clean"]
    assert last["eval_robust_acc"] == single["pgd"]
    assert run["full0"]["n"] == single.n == 150 and run["full0"]["counts"] == single.counts
    for key, outcome in single.per_example.items():
        assert torch.equal(run["full0"]["per_example"][key], outcome)


def test_checkpoint_resumes_on_every_rank_bit_for_bit(two_process_run: dict[str, Any]) -> None:
    """A checkpoint written by rank 0 after epoch 1, resumed in a new 2-process group, ends at the
    weights of the uninterrupted run on both ranks."""
    run = two_process_run
    for rank in range(WORLD):
        full, resumed = run[f"full{rank}"], run[f"resumed{rank}"]
        assert all(torch.equal(v, resumed["state"][k]) for k, v in full["state"].items())
        drop = [{k: v for k, v in r.items() if k != "time"} for r in full["history"]]
        assert drop == [{k: v for k, v in r.items() if k != "time"} for r in resumed["history"]]
    # rank 0 wrote last.pt and, as fit had an eval_loader, best.pt (no temporary files)
    assert sorted(p.name for p in (run["out"] / "ckpt").iterdir()) == ["best.pt", "last.pt"]


def test_ddp_checkpoint_loads_single_process(two_process_run: dict[str, Any]) -> None:
    """Checkpoints hold the inner module's state_dict (no ``module.`` prefix), so a plain trainer
    resumes from one; it warns that the random states of 2 ranks cannot all continue."""
    path = two_process_run["out"] / "ckpt" / "last.pt"
    state = read_checkpoint(path)
    assert len(state["rng"]["ranks"]) == WORLD
    model = _model()
    assert state["model"].keys() == model.state_dict().keys()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    objective = AdversarialTraining(PGD(LinfBall(0.1), steps=2))
    with pytest.warns(UserWarning, match="2 data-parallel processes"):
        trainer = RobustTrainer.resume(path, model, opt, objective, progress=None)
    assert trainer.epoch == 1
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_example_runs_under_torchrun(tmp_path: Path) -> None:
    """The README's command: examples/distributed_training.py on 2 processes with torchrun."""
    pytest.importorskip("sklearn")
    script = Path(__file__).resolve().parents[1] / "examples" / "distributed_training.py"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    args += ["--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)]
    args += ["--quick", "--epochs", "2", "--checkpoint-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es) on cpu" in run.stdout and "pgd-20" in run.stdout
    assert run.stdout.count("evaluation") == 1  # printed by rank 0 only
    assert (tmp_path / "last.pt").is_file()


# ----------------------------------------------------------------------- one process
def test_one_process_group_trains_like_a_plain_trainer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside torchrun, init_distributed starts a 1-process group; ``ddp=True`` there gives the
    plain trainer's weights and history (rank 0 keeps the seed; reductions are identities). A
    ``torch.compile``d module wrapped afterwards trains the same, and its checkpoint holds the
    plain module's keys."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(96, 1, 8, 8, generator=gen), torch.randint(0, 10, (96,)))
    results = {}
    assert not dist.is_initialized()
    assert init_distributed("gloo") == torch.device("cpu")
    torch._dynamo.reset()
    try:
        for variant in ("plain", "ddp", "compiled"):
            torch.manual_seed(0)
            model = _model()
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            if variant == "compiled":
                model = wrap_ddp(torch.compile(model, backend="aot_eager"))
            objective = AdversarialTraining(PGD(LinfBall(0.1), steps=2))
            trainer = RobustTrainer(model, opt, objective, ddp=variant == "ddp", progress=None)
            assert trainer.data_parallel == (variant != "plain")
            history = trainer.fit(
                distributed_loader(data, 32), 2, shard_loader(data, 40), checkpoint_dir=tmp_path
            )
            saved = read_checkpoint(tmp_path / "last.pt")["model"]
            results[variant] = (saved, [r | {"time": 0} for r in history])
    finally:
        dist.destroy_process_group()
    (plain, h_plain), (wrapped, h_wrapped) = results["plain"], results["ddp"]
    assert h_plain == h_wrapped
    assert all(torch.equal(v, wrapped[k]) for k, v in plain.items())
    compiled = results["compiled"][0]
    assert compiled.keys() == plain.keys()
    for k, v in plain.items():
        torch.testing.assert_close(compiled[k], v, rtol=1e-4, atol=1e-5)


def test_set_epoch_reaches_sampler_and_dataset() -> None:
    """The trainer calls set_epoch on the sampler and the dataset before every epoch."""

    class Recording(TensorDataset):
        epochs: list[int]

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    data = Recording(torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,)))
    data.epochs = []
    sampler = DistributedSampler(data, num_replicas=1, rank=0, seed=0)
    loader = DataLoader(data, batch_size=20, sampler=sampler)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    RobustTrainer(model, opt, AdversarialTraining(FGSM(LinfBall(0.1))), progress=None).fit(
        loader, 3
    )
    assert data.epochs == [0, 1, 2] and sampler.epoch == 2


@given(n=st.integers(0, 200), world=st.integers(1, 8))
def test_shard_sampler_partitions_without_padding(n: int, world: int) -> None:
    """Shards cover every index exactly once, in order, and differ in length by at most one."""
    shards = [list(ShardSampler(n, rank=r, world_size=world)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    sizes = [len(ShardSampler(n, rank=r, world_size=world)) for r in range(world)]
    assert sizes == [len(s) for s in shards] and max(sizes) - min(sizes) <= 1


def test_helpers_without_a_process_group() -> None:
    """Without a group: rank 0 of 1, collectives are identities, the loaders see all data."""
    assert not dist.is_initialized()
    assert (get_rank(), get_world_size()) == (0, 1)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce(t), t) and all_reduce(t) is not t
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    data = TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    seen = torch.cat([y for _, y in distributed_loader(data, 3)])
    assert sorted(seen.tolist()) == list(range(10))
    assert torch.cat([y for _, y in shard_loader(data, 4)]).tolist() == list(range(10))
    report = evaluate(nn.Linear(1, 10), data[:])
    assert reduce_report(report) is report
    assert rank_seed(5, 0) == 5 and len({rank_seed(5, r) for r in range(64)}) == 64


def test_errors_name_the_problem() -> None:
    with pytest.raises(RuntimeError, match="init_distributed"):
        wrap_ddp(_model())
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="process group"):
        RobustTrainer(model, opt, AdversarialTraining(FGSM(LinfBall(0.1))), ddp=True)
    with pytest.raises(ValueError, match="backend must be"):
        init_distributed("tcp")
    with pytest.raises(ValueError, match="rank must be"):
        ShardSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="op must be"):
        all_reduce(torch.zeros(1), "mean")


# ----------------------------------------------------------------------- precision and compile
@pytest.mark.parametrize("threat", [LinfBall(0.1), L2Ball(0.5)], ids=["linf", "l2"])
def test_attack_under_autocast_keeps_input_dtype_and_ball(threat: Any) -> None:
    """Under bfloat16 autocast (what amp=True runs on CPU) x_adv stays float32, so the
    projection onto ball ∩ domain is exact; the model is untouched."""
    torch.manual_seed(0)
    model = _model()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    state = copy.deepcopy(model.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = PGD(threat, steps=3)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float32 and not x_adv.requires_grad
    assert bool((threat.norm(x_adv - x) <= 0.5 * (1 + 1e-6)).all())
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not torch.equal(x_adv, x)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _compiled_pgd(backend: str) -> None:
    torch.manual_seed(0)
    model = _model().eval()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    attack = PGD(LinfBall(0.1), steps=3)  # fixed steps, no early stop
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    want = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    got = attack(compiled, x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    with torch._dynamo.config.patch(error_on_recompile=True):  # same shapes: no recompilation
        attack(compiled, torch.rand(32, 1, 8, 8), y, generator=torch.Generator().manual_seed(1))
    assert not model.training and all(
        p.grad is None and p.requires_grad for p in model.parameters()
    )


def test_pgd_on_a_compiled_model() -> None:
    """torch.compile traces the model in one graph (fullgraph) for PGD's loop and does not
    recompile between calls (aot_eager: tracing and AOT autograd, no C++ build, ~2 s)."""
    torch._dynamo.reset()
    _compiled_pgd("aot_eager")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_pgd_on_an_inductor_compiled_model() -> None:
    """The same with the default inductor backend (a cold compile: 17 s on a busy 2-core CPU)."""
    torch._dynamo.reset()
    _compiled_pgd("inductor")
