"""The training loop: learns, is deterministic, resumes exactly, keeps the best state, flags divergence."""

import dataclasses
import math

import pytest
import torch

from distill import losses, models
from distill.data import Inputs
from distill.train import Diverged, TrainConfig, agreement, error, fit, infer, logit_rmse


def blobs(n=400, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def train(config, report=None, resume=None, model=None):
    x, y = blobs()
    torch.manual_seed(0)
    model = model or models.snn((10,), 3, hidden=16)
    result = fit(model, x[:300], y[:300], losses.cross_entropy, (x[300:], y[300:]), config, report, resume)
    return model, result


CONFIG = TrainConfig(optimizer="sgd", lr=0.05, batch_size=32, epochs=6)


def test_learns_separable_blobs():
    _, result = train(CONFIG)
    assert result.best_val_error < 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_numbers(optimizer):
    config = dataclasses.replace(CONFIG, optimizer=optimizer, lr=0.01)
    a, ra = train(config)
    b, rb = train(config)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    c, _ = train(dataclasses.replace(config, seed=1))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run():
    full, full_result = train(CONFIG)
    saved = {}

    def report(row, state):
        if row["epoch"] == 3:
            saved.update(torch.load(_roundtrip(state()), weights_only=False))

    train(dataclasses.replace(CONFIG, epochs=6), report=report)
    torch.manual_seed(123)  # a fresh process would start from other weights: resume must overwrite them
    resumed, result = train(CONFIG, resume=saved, model=models.snn((10,), 3, hidden=16))
    for pa, pb in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in full_result.history]


def _roundtrip(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_keeps_best_val_state_and_stops_early():
    x, y = blobs()
    # Labels shuffled: val error cannot improve for long, so patience stops the run before 30 epochs.
    y_noise = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    model = models.snn((10,), 3, hidden=16)
    config = TrainConfig(lr=0.05, batch_size=32, epochs=30, patience=3)
    result = fit(model, x[:300], y_noise[:300], losses.cross_entropy, (x[300:], y[300:]), config)
    assert result.epochs == result.best_epoch + 3 < 30
    assert error(infer(model, x[300:]), y[300:]) == result.best_val_error


def test_compact_inputs_train_exactly_as_the_normalised_tensor_they_stand_for():
    # uint8 images normalised per batch (Inputs, as trials hold them), a subset of them (a shard's rows), and the
    # same inputs normalised up front in fp32: the same weights, bit for bit.
    g = torch.Generator().manual_seed(0)
    stored = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8, generator=g)
    mean, std = torch.full((1, 1, 1, 1), 100.0), torch.full((1, 1, 1, 1), 60.0)
    dense = (stored.float() - mean) / std  # (400, 1, 4, 4)
    y = (stored.flatten(1).float().mean(1) > 127.5).long()
    rows = torch.randperm(400, generator=g)[:300]

    def weights(x, labels):
        torch.manual_seed(0)
        model = models.snn((1, 4, 4), 2, hidden=16)
        config = TrainConfig(optimizer="adam", lr=1e-2, batch_size=32, epochs=2)
        fit(model, x, labels, losses.cross_entropy, (dense[:50], y[:50]), config)
        return list(model.parameters())

    for compact, plain, labels in ((Inputs(stored, mean, std), dense, y),
                                   (Inputs(stored, mean, std).take(rows), dense[rows], y[rows])):
        assert all(map(torch.equal, weights(compact, labels), weights(plain, labels)))


def test_divergence_is_reported():
    with pytest.raises(Diverged, match="lower the lr"):
        train(TrainConfig(lr=1e6, momentum=0.0, batch_size=32, epochs=3))


def test_metrics_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert error(logits, torch.tensor([0, 1, 1, 1])) == 0.25
    assert agreement(logits, teacher) == 0.75
    diff = (logits - teacher).pow(2).mean().item()
    assert logit_rmse(logits, teacher) == pytest.approx(math.sqrt(diff))
