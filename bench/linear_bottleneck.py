"""Figure 4: the paper's bottleneck claim (section 2.3): a linear bottleneck W = U V of k units makes a wide
student cheaper to train and to hold, O(k(H + D)) parameters in its first layers instead of O(HD).

Command:   python bench/linear_bottleneck.py               (about 3 minutes on 2 cores)
Measures:  (a) time and epochs for a wide student (H=8192) to bring the training loss below a threshold,
           without and with a k=250 bottleneck, through `distill.train.fit` (mimic L2, AdamW at lr 1e-3 and
           3e-3, constant lr, batch 128). Data is TIMIT-shaped, D=1845 and C=183, but random: 8,192 inputs
           x ~ N(0, 1) with low-rank structure (a 64-dim latent through a fixed random projection, plus
           noise, as speech frames are), labelled by a fixed random teacher (a 2 x 512 ReLU `dnn`, logits
           scaled to unit variance) so the targets are learnable. Threshold: 15% of the loss of predicting
           zeros. (b) exact parameter counts and fp32 training memory (weights, gradients, Adam's two moments)
           of the paper's widths both ways (`distill.models.snn_params`, checked on the meta device).
Target:    the paper's claim: the bottleneck reaches the loss in less time (and no more epochs), with
           parameter memory O(k(H + D)) vs O(HD).
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from common import arguments, epoch_seconds, load, save, set_threads, snn_flops, table
from fixtures import student_parameters

from distill import losses, models
from distill.train import TrainConfig

D, C, K = 1845, 183, 250  # TIMIT's input (15 frames x 123 features) and 183 phone-state targets; the paper's k
ADAM = TrainConfig(optimizer="adam", lr=1e-3, momentum=0.9, batch_size=128, epochs=8, schedule="constant")


def timit_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, D): a 64-dim latent through a fixed random projection plus noise, standardised; z (n, C): the
    logits of a fixed random 2 x 512 ReLU teacher, scaled to unit variance."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 64, generator=gen)
    x = latent @ torch.randn(64, D, generator=gen) + 0.5 * torch.randn(n, D, generator=gen)
    x = (x - x.mean(0)) / x.std(0)
    torch.manual_seed(seed + 1)
    teacher = models.dnn((D,), C, hidden=512, layers=2)
    with torch.no_grad():
        z = teacher(x)
    return x, z / z.std()


def to_threshold(history: list[dict], threshold: float) -> tuple[int | None, float | None]:
    """(epochs, seconds) until the epoch-mean training loss first fell below `threshold`, or (None, None)."""
    for row in history:
        if row["train_loss"] < threshold:
            return row["epoch"], row["seconds"]
    return None, None


def main() -> None:
    parser = arguments("linear_bottleneck", __doc__)
    parser.add_argument("--inputs", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=ADAM.epochs)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--fraction", type=float, default=0.15, help="threshold: this fraction of the zero loss")
    args = parser.parse_args()
    set_threads(args.threads)
    x, z = timit_like(args.inputs)
    zero = losses.mimic_l2(torch.zeros_like(z), z).item()
    threshold = args.fraction * zero
    val = (x[:512], z[:512].argmax(1))
    rows = []
    for lr in args.lrs:  # alternates the two shapes at each rate
        for k in (None, K):
            torch.manual_seed(0)
            model = models.snn((D,), C, args.hidden, k)
            config = dataclasses.replace(ADAM, lr=lr, epochs=args.epochs)
            per_epoch, result = epoch_seconds(model, x, z, losses.mimic_l2, val, config)
            epochs, seconds = to_threshold(result.history, threshold)
            rows.append({"H": args.hidden, "k": k, "lr": lr, "params": models.param_count(model),
                         "epochs_to_loss": epochs, "seconds_to_loss": seconds,
                         "epoch_s": sum(per_epoch) / len(per_epoch),
                         "final_loss": result.history[-1]["train_loss"],
                         "losses": [round(r["train_loss"], 3) for r in result.history],
                         "epoch_seconds": [round(s, 3) for s in per_epoch], "load": load()})
            print(table(rows[-1:], ["H", "k", "lr", "epochs_to_loss", "seconds_to_loss", "epoch_s", "final_loss"]),
                  flush=True)
    memory = []
    for h in (args.hidden, 8_000, 50_000, 160_000, 400_000):
        for k in (None, K):
            p = student_parameters(D, h, C, k)
            memory.append({"H": h, "k": k, "params": p, "param_MiB": p * 4 / 2**20,
                           "train_state_GiB": p * 16 / 2**30,
                           "MFLOP_per_sample": snn_flops(D, h, C, k)["executed"] / 1e6})
    print(f"\nloss of predicting zeros {zero:.2f}; threshold {threshold:.2f}; {args.inputs} inputs; load {load()}")
    print(table(rows, ["H", "k", "lr", "params", "epochs_to_loss", "seconds_to_loss", "epoch_s", "final_loss",
                       "load"]))
    print()
    print(table(memory, ["H", "k", "params", "param_MiB", "train_state_GiB", "MFLOP_per_sample"]))
    save(args.out, {"d": D, "classes": C, "zero_loss": zero, "threshold": threshold, "inputs": args.inputs,
                    "rows": rows, "memory": memory}, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
