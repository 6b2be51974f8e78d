"""Architectures: output shapes, exact parameter counts (closed form), ensembles, bad sizes."""

import pytest
import torch

from distill import models
from distill.errors import UserError


def count(build, *args, **kwargs):
    # The meta device allocates nothing: a 400k-unit student is counted without its 770M parameters.
    with torch.device("meta"):
        return models.param_count(build(*args, **kwargs))


@pytest.mark.parametrize("hidden", [8_000, 400_000])
def test_snn_closed_form_at_timit_shapes(hidden):
    d, k, c = 1845, 250, 183
    # V (d -> k) has no bias; U (k -> H) and beta (H -> C) do.
    assert count(models.snn, (d,), c, hidden, bottleneck=k) == d * k + k * hidden + hidden + hidden * c + c
    assert models.snn_params(d, hidden, c, k) == d * k + k * hidden + hidden + hidden * c + c
    assert count(models.snn, (d,), c, hidden) == d * hidden + hidden + hidden * c + c == models.snn_params(d, hidden, c)


def test_bottleneck_student_is_much_smaller_at_paper_scale():
    full, low = models.snn_params(1845, 400_000, 183), models.snn_params(1845, 400_000, 183, 250)
    assert low < full / 4


def test_dnn_and_cnn_counts():
    # dnn: 784*2000+2000 + 2*(2000*2000+2000) + 2000*10+10
    assert count(models.dnn, (1, 28, 28), 10) == 784 * 2000 + 2000 + 2 * (2000 * 2000 + 2000) + 2000 * 10 + 10
    # The paper's CIFAR-10 teacher 128c-p-128c-p-128c-p-1000fc with 5x5 kernels: 32 -> 16 -> 8 -> 4.
    convs = (3 * 25 * 128 + 128) + 2 * (128 * 25 * 128 + 128)
    assert count(models.cnn, (3, 32, 32), 10) == convs + 128 * 4 * 4 * 1000 + 1000 + 1000 * 10 + 10
    # The paper's CIFAR-10 student 128c-p-1200L-30k.
    conv = 3 * 25 * 128 + 128
    assert count(models.conv_snn, (3, 32, 32), 10, 30_000) == \
        conv + 128 * 16 * 16 * 1200 + 1200 * 30_000 + 30_000 + 30_000 * 10 + 10


def test_forward_shapes_on_cpu():
    x = torch.randn(4, 1, 28, 28)
    for arch, kwargs in [("dnn", {"hidden": 32}), ("cnn", {"channels": (4, 8), "hidden": (16,)}),
                         ("snn", {"hidden": 32, "bottleneck": 8}),
                         ("conv_snn", {"hidden": 32, "bottleneck": 8, "channels": 4})]:
        assert models.build(arch, (1, 28, 28), 10, **kwargs)(x).shape == (4, 10)


def test_ensemble_is_mean_of_member_logits():
    members = [models.snn((5,), 3, hidden=4) for _ in range(3)]
    x = torch.randn(6, 5)
    expected = (members[0](x) + members[1](x) + members[2](x)) / 3
    torch.testing.assert_close(models.Ensemble(members)(x), expected)


@pytest.mark.parametrize("hidden,k", [(64, 64), (64, 128), (0, None), (64, 0)])
def test_bad_sizes_are_user_errors(hidden, k):
    with pytest.raises(UserError, match="bottleneck|positive"):
        models.snn((10,), 2, hidden, bottleneck=k)


def test_unknown_architecture():
    with pytest.raises(UserError, match="unknown architecture 'resnet'"):
        models.build("resnet", (1, 8, 8), 10)


@pytest.mark.parametrize("arch,kwargs", [("snn", {"hidden": 32, "input_dropout": 0.2}), ("dnn", {"hidden": 32}),
                                         ("cnn", {"channels": (4,), "hidden": (32,)}),
                                         ("conv_snn", {"hidden": 32, "bottleneck": 8, "channels": 4})])
def test_dropout_is_an_option_that_changes_training_not_the_net(arch, kwargs):
    plain = models.build(arch, (1, 8, 8), 10, **kwargs)
    dropped = models.build(arch, (1, 8, 8), 10, dropout=0.5, **kwargs)
    assert models.param_count(plain) == models.param_count(dropped)  # same weights, same notation
    assert models.describe(plain, (1, 8, 8)) == models.describe(dropped, (1, 8, 8))
    assert not any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in plain.modules())
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in dropped.modules())
    x = torch.randn(16, 1, 8, 8)
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))  # a fresh mask each call while training
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))
    with pytest.raises(UserError, match="dropout rate"):
        models.build(arch, (1, 8, 8), 10, dropout=1.0, **kwargs)
