"""Phone decoding speed: `distill.decode.decode` on a TIMIT core-test-sized batch on one CPU thread.

Command:   .venv/bin/python bench/decode.py [--grid]     (5-10 s on 2 shared cores; --grid: 35 s more)
Measures:  192 utterances of 200-400 frames (about 57k frames, like the 24-speaker core test set) of
           random-ish logits over the 183 states (a random alignment's class + 4, plus N(0, 1)), decoded
           with a Decoder fitted on a random train alignment; the median of 3 timed runs after a warm-up,
           as seconds and state-frames/s (frames x 183 / seconds). --grid also times one `decode_grid`
           pass over `choose`'s 16 (LM weight, penalty) points, as choosing them on a dev set runs it.
Measured:  on one thread of 2 cores shared with other jobs (load 4.5-6.5), so the spread is the load's:
           57,282 frames in 0.9-2.9 s (3.7-11M state-frames/s); --grid: 16 points in 34.8 s (2.2 s a
           point). Interleaved with the decoder before the backtrace recomputed the phone left (it kept a
           P x P argmax per frame), same hypotheses: 1.95-2.78 s against 2.17-3.21 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import load

from distill import decode, speech


def alignment(gen: torch.Generator, lengths: torch.Tensor) -> torch.Tensor:
    """(F,) classes of random phones lasting 5-15 frames, each in equal thirds of 3 states."""
    frames = []
    while len(frames) < int(lengths.sum()):
        n = int(torch.randint(5, 16, (1,), generator=gen))
        p = int(torch.randint(len(speech.PHONES), (1,), generator=gen))
        frames += [speech.STATES * p + speech.STATES * i // n for i in range(n)]
    return torch.tensor(frames[:int(lengths.sum())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", action="store_true", help="also time the 16-point grid `choose` decodes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    train_lengths = torch.randint(200, 400, (500,), generator=gen)
    train = alignment(gen, train_lengths)
    runs = (train[:-1] // 3 != train[1:] // 3).nonzero()[:, 0]  # last frame of every phone but the final
    sequences = [(train[torch.cat([runs, torch.tensor([len(train) - 1])])] // 3).tolist()]
    model = decode.Decoder.fit(train, train_lengths, sequences)
    lengths = torch.randint(200, 400, (args.utterances,), generator=gen)
    logits = torch.randn(int(lengths.sum()), speech.CLASSES, generator=gen)
    logits[torch.arange(len(logits)), alignment(gen, lengths)] += 4
    decode.decode(logits[:int(lengths[:8].sum())], lengths[:8], model, 2.0, 0.0)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        decode.decode(logits, lengths, model, 2.0, 0.0)
        seconds.append(time.perf_counter() - t0)
    s = statistics.median(seconds)
    print(f"{len(logits):,} frames x {speech.CLASSES} states, {args.utterances} utterances, {args.threads} "
          f"thread(s): {s:.2f} s, {len(logits) * speech.CLASSES / s / 1e6:.1f}M state-frames/s (load {load()})")
    if args.grid:
        points = [(w, p) for w in decode.LM_WEIGHTS for p in decode.PENALTIES]  # `choose`'s grid
        t0 = time.perf_counter()
        decode.decode_grid(logits, lengths, model, points)
        s = time.perf_counter() - t0
        print(f"{len(points)} points in one pass: {s:.1f} s, {s / len(points):.2f} s a point (load {load()})")


if __name__ == "__main__":
    main()
