"""advtrade.models: shapes, parameter counts against hand arithmetic, block wiring, Normalize,
BatchNorm/dropout, channels_last, initialisation, the small CNN, argument checks."""

from __future__ import annotations

import copy
import doctest
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtrade.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Normalize,
    PreActBlock,
    PreActResNet,
    WideResNet,
    preact_resnet18,
    small_cnn,
    wide_resnet,
)


def make_model(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """advtrade 0.1's runner CNN, as it stood (the reference small_cnn must reproduce)."""
    c, h, w = input_shape
    stride, kernel = (1, 3) if max(h, w) <= 12 else (2, 5)
    h2, w2 = math.ceil(math.ceil(h / stride) / 2), math.ceil(math.ceil(w / stride) / 2)
    return nn.Sequential(
        nn.Conv2d(c, 16, kernel, stride=stride, padding=kernel // 2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * h2 * w2, num_classes),
    )

# ---------------------------------------------------------------- hand arithmetic of the counts


def conv(cin: int, cout: int, k: int) -> int:
    """Weights of a bias-free k×k convolution."""
    return cin * cout * k * k


def bn(c: int) -> int:
    """Affine parameters of a BatchNorm (weight and bias; running stats are buffers)."""
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


# PreAct ResNet-18, 10 classes, written out layer by layer.
STEM = conv(3, 64, 3)  # 1,728
STAGE1 = 2 * (bn(64) + conv(64, 64, 3) + bn(64) + conv(64, 64, 3))  # 147,968
STAGE2 = (bn(64) + conv(64, 128, 3) + bn(128) + conv(128, 128, 3) + conv(64, 128, 1)) + (
    bn(128) + conv(128, 128, 3) + bn(128) + conv(128, 128, 3)
)  # 525,440
STAGE3 = (bn(128) + conv(128, 256, 3) + bn(256) + conv(256, 256, 3) + conv(128, 256, 1)) + (
    bn(256) + conv(256, 256, 3) + bn(256) + conv(256, 256, 3)
)  # 2,099,456
STAGE4 = (bn(256) + conv(256, 512, 3) + bn(512) + conv(512, 512, 3) + conv(256, 512, 1)) + (
    bn(512) + conv(512, 512, 3) + bn(512) + conv(512, 512, 3)
)  # 8,393,728
HEAD = bn(512) + linear(512, 10)  # final BN 1,024 + linear 5,130
PREACT18 = STEM + STAGE1 + STAGE2 + STAGE3 + STAGE4 + HEAD


def wrn_params(depth: int, k: int, classes: int = 10) -> int:
    """Zagoruyko & Komodakis' WRN-depth-k by formula: per group, a first block that may change
    width (1×1 shortcut when it does) and n − 1 blocks of two BN + two 3×3 convs at one width."""
    n = (depth - 4) // 6
    total = conv(3, 16, 3) + bn(64 * k) + linear(64 * k, classes)
    for cin, cout in ((16, 16 * k), (16 * k, 32 * k), (32 * k, 64 * k)):
        first = bn(cin) + conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3)
        first += conv(cin, cout, 1) if cin != cout else 0
        total += first + (n - 1) * (2 * bn(cout) + 2 * conv(cout, cout, 3))
    return total


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_capturing(model: nn.Module, modules: list[nn.Module], x: torch.Tensor):
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in modules]
    try:
        return model(x), seen
    finally:
        for hook in hooks:
            hook.remove()


def test_hand_arithmetic_gives_the_published_figures() -> None:
    # WRN-28-10 written out: 432 (stem) + 1,640,672 + 6,968,000 + 27,862,400 (groups)
    # + 1,280 (final BN) + 6,410 (linear).
    assert 432 + 1_640_672 + 6_968_000 + 27_862_400 + 1_280 + 6_410 == 36_479_194
    assert wrn_params(28, 10) == 36_479_194
    assert wrn_params(34, 10) == 46_160_474  # the TRADES WRN-34-10
    # PreAct ResNet-18 with its final BN + ReLU (Wong et al. 2020, Rice et al. 2020):
    assert PREACT18 == 11_172_170
    # The often-quoted 11,171,146 is the variant without the final BatchNorm (512 weights and
    # 512 biases), e.g. pytorch-cifar's PreActResNet18; it is not this architecture.
    assert PREACT18 - bn(512) == 11_171_146


# ---------------------------------------------------------------- PreAct ResNet-18


@pytest.fixture(scope="module")
def resnet() -> PreActResNet:
    torch.manual_seed(0)
    return preact_resnet18().eval()


def test_preact_resnet18_maps_cifar_batches_to_logits(resnet: PreActResNet) -> None:
    x = torch.rand(3, 3, 32, 32)
    out = resnet(x)
    assert out.shape == (3, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert resnet(torch.rand(1, 3, 40, 48)).shape == (1, 10)  # global pooling: any size
    gray = preact_resnet18(7, in_channels=1).eval()
    assert gray(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_preact_resnet18_parameter_count(resnet: PreActResNet) -> None:
    assert count(resnet.conv1) == STEM
    stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    assert [count(s) for s in stages] == [STAGE1, STAGE2, STAGE3, STAGE4]
    assert count(resnet.bn) + count(resnet.linear) == HEAD
    assert count(resnet) == PREACT18 == 11_172_170
    assert count(preact_resnet18(100)) == PREACT18 + 90 * 513  # 512 weights + 1 bias a class


def test_preact_resnet18_layout(resnet: PreActResNet) -> None:
    """3×3 stem, no max-pool, strides 1, 2, 2, 2, 1×1 shortcuts only where the shape changes."""
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in resnet.modules())
    stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    _, outs = run_capturing(resnet, stages, torch.rand(1, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    blocks = [b for s in stages for b in s]
    assert len(blocks) == 8 and all(isinstance(b, PreActBlock) for b in blocks)
    with_shortcut = [i for i, b in enumerate(blocks) if b.shortcut is not None]
    assert with_shortcut == [2, 4, 6]
    assert [blocks[i].shortcut.kernel_size for i in with_shortcut] == [(1, 1)] * 3


def test_preact_block_is_pre_activation() -> None:
    """conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(relu(bn1(x))), or + x if shape kept."""
    torch.manual_seed(1)
    for block, shape in ((PreActBlock(8, 16, 2), (2, 8, 6, 6)), (PreActBlock(8, 8), (2, 8, 5, 5))):
        block.train()
        for m in block.modules():  # non-trivial affine BN so a wrong order shows
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
        x = torch.randn(shape)
        pre = F.relu(block.bn1(x))
        skip = x if block.shortcut is None else block.shortcut(pre)
        expected = block.conv2(F.relu(block.bn2(block.conv1(pre)))) + skip
        torch.testing.assert_close(block(x), expected)


def test_wide_block_dropout_sits_between_the_convolutions() -> None:
    torch.manual_seed(2)
    block = PreActBlock(8, 8, 1, dropout=0.5).train()
    x = torch.randn(2, 8, 5, 5)
    torch.manual_seed(7)
    out = block(x)
    torch.manual_seed(7)
    hidden = F.relu(block.bn2(block.conv1(F.relu(block.bn1(x)))))
    expected = block.conv2(F.dropout(hidden, 0.5, training=True)) + x
    torch.testing.assert_close(out, expected)


def test_preact_resnet_uses_pytorch_default_init(resnet: PreActResNet) -> None:
    """Default Conv2d init is uniform within ±1/sqrt(fan_in), unlike a Kaiming-normal one."""
    w = resnet.layer4[1].conv2.weight
    bound = 1 / math.sqrt(512 * 9)
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound


@pytest.mark.parametrize("build", [preact_resnet18, lambda: wide_resnet(10, 1)])
def test_head_is_batchnorm_relu_global_pool_linear(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    for m in model.bn.modules():  # non-trivial BN statistics, so that the ReLU matters
        nn.init.normal_(m.bias, 0, 1)
        m.running_mean.uniform_(-1, 1)
    last = model.layer4 if isinstance(model, PreActResNet) else model.layer3
    out, seen = run_capturing(model, [last], torch.rand(2, 3, 32, 32))
    pooled = F.relu(model.bn(seen[0])).mean(dim=(2, 3))
    torch.testing.assert_close(out, model.linear(pooled))


# ---------------------------------------------------------------- WideResNet


def test_wide_resnet_28_10_parameter_count() -> None:
    model = wide_resnet(28, 10)  # built, never run at full width
    assert isinstance(model, WideResNet)
    assert count(model) == wrn_params(28, 10) == 36_479_194
    assert count(model.conv1) == 432
    groups = (model.layer1, model.layer2, model.layer3)
    assert [count(g) for g in groups] == [1_640_672, 6_968_000, 27_862_400]
    assert [len(g) for g in groups] == [4, 4, 4]


@pytest.mark.parametrize(("depth", "k"), [(10, 1), (16, 2), (22, 1), (34, 1)])
def test_wide_resnet_parameter_counts_follow_the_formula(depth: int, k: int) -> None:
    assert count(wide_resnet(depth, k)) == wrn_params(depth, k)
    assert count(wide_resnet(depth, k, dropout=0.3)) == wrn_params(depth, k)


def test_small_wide_resnet_forward() -> None:
    torch.manual_seed(0)
    model = wide_resnet(10, 1).eval()
    out = model(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert wide_resnet(16, 2, 100).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    # Widths 16, 16k, 32k, 64k; k = 1 keeps 16 channels in the first group: no shortcut there.
    assert model.conv1.out_channels == 16
    assert model.layer1[0].shortcut is None and model.layer2[0].shortcut is not None
    assert model.linear.in_features == 64


def test_wide_resnet_uses_kaiming_fan_out_init() -> None:
    torch.manual_seed(0)
    model = wide_resnet(16, 4)
    w = model.layer3[1].conv2.weight  # 256 → 256, 3×3: 589,824 weights
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    assert w.mean().abs().item() < 1e-3
    # fan_out, not fan_in: where the two differ (64 → 128 channels) the std is set by the output.
    block = model.layer2[0]
    assert block.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.03)
    assert block.shortcut.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert torch.equal(model.linear.bias, torch.zeros(10))


def test_wide_resnet_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    model = wide_resnet(10, 1, dropout=0.3)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.3 for d in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in wide_resnet(10, 1).modules())
    x = torch.rand(4, 3, 32, 32)
    assert not torch.equal(model.train()(x), model(x))
    assert torch.equal(model.eval()(x), model(x))


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("build", [preact_resnet18, lambda **kw: wide_resnet(10, 1, **kw)])
def test_normalize_is_the_first_layer(build) -> None:
    torch.manual_seed(3)
    normed = build(mean=CIFAR10_MEAN, std=CIFAR10_STD).eval()
    torch.manual_seed(3)
    plain = build().eval()
    assert isinstance(next(normed.children()), Normalize)
    assert isinstance(plain.normalize, nn.Identity)
    # Same weights: Normalize adds only its two buffers and consumes no randomness.
    normed_state = normed.state_dict()
    assert set(normed_state) == set(plain.state_dict()) | {"normalize.mean", "normalize.std"}
    for key, value in plain.state_dict().items():
        assert torch.equal(value, normed_state[key]), key
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1)
    out, seen = run_capturing(normed, [normed.normalize], x)
    torch.testing.assert_close(seen[0], (x - mean) / std)
    torch.testing.assert_close(out, plain((x - mean) / std), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, plain(x), atol=1e-3)


def test_cifar10_statistics_and_statistics_shared_by_the_channels() -> None:
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert CIFAR10_STD == (0.2471, 0.2435, 0.2616)
    model = preact_resnet18(in_channels=1, mean=[0.1307], std=[0.3081])
    assert model.normalize.mean.tolist() == pytest.approx([0.1307])
    shared = wide_resnet(10, 1, mean=[0.5], std=[0.25])
    assert shared.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


# ---------------------------------------------------------------- memory format, BatchNorm


def test_channels_last_gives_the_same_logits(resnet: PreActResNet) -> None:
    x = torch.rand(2, 3, 32, 32)
    reference = resnet(x)
    x_cl = x.to(memory_format=torch.channels_last)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(resnet(x_cl), reference, rtol=1e-4, atol=1e-4)
    cl_model = copy.deepcopy(resnet).to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl_model(x_cl), reference, rtol=1e-4, atol=1e-4)
    wrn = wide_resnet(10, 1, mean=CIFAR10_MEAN, std=CIFAR10_STD).eval()
    torch.testing.assert_close(wrn(x_cl), wrn(x), rtol=1e-4, atol=1e-4)


def test_eval_mode_is_deterministic_and_uses_running_statistics(resnet: PreActResNet) -> None:
    x = torch.rand(4, 3, 32, 32)
    first = resnet(x)
    assert torch.equal(first, resnet(x))
    # Running statistics, not batch statistics: an example's logits do not depend on its batch.
    torch.testing.assert_close(resnet(x[:1]), first[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("build", "n_bn"), [(preact_resnet18, 17), (lambda: wide_resnet(10, 1), 7)]
)
def test_batchnorm_buffers_exist_and_update_in_training_only(build, n_bn: int) -> None:
    torch.manual_seed(0)
    model = build()
    named = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(named) == n_bn  # two per block and the final one
    buffers, norms = dict(model.named_buffers()), list(named.values())
    for buf in ("running_mean", "running_var", "num_batches_tracked"):
        assert all(f"{name}.{buf}" in buffers for name in named), buf
    before = norms[0].running_mean.clone()
    x = torch.rand(2, 3, 32, 32)
    model.eval()(x)
    assert torch.equal(norms[0].running_mean, before)
    model.train()(x)
    assert not torch.equal(norms[0].running_mean, before)
    assert int(norms[0].num_batches_tracked) == 1


# ---------------------------------------------------------------- the small CNN

SHAPES = [(1, 8, 8), (1, 12, 12), (1, 13, 13), (1, 28, 28), (3, 32, 32), (2, 7, 13), (1, 12, 30)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_small_cnn_initialises_like_make_model(shape: tuple[int, int, int], seed: int) -> None:
    torch.manual_seed(seed)
    ours = small_cnn(shape, 10)
    torch.manual_seed(seed)
    theirs = make_model(shape, 10)
    assert str(ours) == str(theirs)  # same layers, same order, same shapes
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    x = torch.rand(3, *shape)
    assert torch.equal(ours(x), theirs(x))
    assert ours(x).shape == (3, 10)
    assert str(small_cnn(torch.Size(shape), 10)) == str(ours)  # any sequence of 3 integers


# ---------------------------------------------------------------- argument checks

MEAN, STD = CIFAR10_MEAN, CIFAR10_STD


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: preact_resnet18(1), ValueError, "num_classes"),
        (lambda: preact_resnet18(True), TypeError, "num_classes"),
        (lambda: preact_resnet18(in_channels=0), ValueError, "in_channels"),
        (lambda: preact_resnet18(in_channels="3"), TypeError, "in_channels"),
        (lambda: preact_resnet18(mean=MEAN), ValueError, "mean and std.*std is None"),
        (lambda: preact_resnet18(std=STD), ValueError, "mean and std.*mean is None"),
        (lambda: preact_resnet18(in_channels=1, mean=MEAN, std=STD), ValueError, "in_channels"),
        (lambda: preact_resnet18(mean=MEAN, std=(0.2, 0.0, 0.2)), ValueError, "std"),
        (lambda: PreActResNet((2, 0)), ValueError, r"blocks_per_stage\[1\]"),
        (lambda: PreActResNet(()), ValueError, "blocks_per_stage"),
        (lambda: PreActResNet(2), TypeError, "blocks_per_stage"),
        (lambda: wide_resnet(27), ValueError, r"depth.*10, 16, 22, 28, 34"),
        (lambda: wide_resnet(4), ValueError, "depth"),
        (lambda: wide_resnet(28.0), TypeError, "depth"),
        (lambda: wide_resnet(28, 0), ValueError, "widen_factor"),
        (lambda: wide_resnet(28, 1.5), TypeError, "widen_factor"),
        (lambda: wide_resnet(28, 10, 1), ValueError, "num_classes"),
        (lambda: wide_resnet(dropout=1.0), ValueError, "dropout"),
        (lambda: wide_resnet(dropout="0.1"), TypeError, "dropout"),
        (lambda: wide_resnet(in_channels=0), ValueError, "in_channels"),
        (lambda: wide_resnet(mean=MEAN), ValueError, "mean and std"),
        (lambda: small_cnn((1, 8), 10), ValueError, "input_shape"),
        (lambda: small_cnn((1, 0, 8), 10), ValueError, r"input_shape\[1\]"),
        (lambda: small_cnn((1, 8.0, 8), 10), TypeError, r"input_shape\[1\]"),
        (lambda: small_cnn("abc", 10), TypeError, "input_shape"),
        (lambda: small_cnn((1, 8, 8), 1), ValueError, "num_classes"),
        (lambda: small_cnn((1, 8, 8), 2.5), TypeError, "num_classes"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_docstring_examples_run() -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for name in ("_resnet", "_wide_resnet", "_small", "_normalize"):
        module = importlib.import_module(f"advtrade.models.{name}")
        failed, attempted = doctest.testmod(module, optionflags=flags, verbose=False)
        assert failed == 0, f"{failed} docstring example(s) failed in {module.__name__}"
        assert attempted > 0, f"{module.__name__} has no docstring examples"
