"""Where a run's time goes, from a sampling profile: seconds per stage, per side of the convergence curves, and the
share inside the model's own operators (what is left to cut once the passes are at their floor).

    py-spy record -r 40 -f raw -o /tmp/stacks.txt -- .venv/bin/advspatial run --out /tmp/run --no-progress
    python benchmarks/profile_stacks.py /tmp/stacks.txt --rate 40

py-spy's ``raw`` format is one collapsed stack per line (frames joined by ``;``, then a space and the sample count).
A sample is *model* time when its innermost frame is one of torch's module or autograd entry points
(:data:`MODEL_FRAMES`): convolutions, pooling, linear layers, the functional layer ops and the backward engine. The
adaptive evaluation's samples are split by what they belong to: the budget's own attack, the curves' *left side*
(separate weaker attacks, drawn in the plot) or *right side* (the stronger attack on the images left standing), and
within each, Square and the EOT attacks. Samples of idle threads (tqdm's monitor) are dropped. A profiler slows the
run by ~10-20%, so read the figures as shares. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

#: innermost frames that are the model's own work (torch's Python entry points of the layers and of backward)
MODEL_FRAMES = ("torch/nn/modules/conv.py", "torch/nn/functional.py", "torch/autograd/graph.py",
                "torch/nn/modules/linear.py", "advspatial/models/pooling.py")
#: the functions of the adaptive evaluation whose samples are split by curve side
ADAPTIVE = ("undefended_batch", "adaptive_batch", "baseline_batch")
#: frames of idle helper threads
IDLE = ("TMonitor",)
FRAME = re.compile(r"(\S+) \(.*?advspatial/(\S+?):\d+\)")


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) per line of a py-spy raw file, idle threads left out."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and not any(word in stack for word in IDLE):
            stacks.append((stack.split(";"), int(count)))
    return stacks


def stage_of(frames: list[str]) -> str:
    """The adaptive job a sample belongs to, else the outermost stage function of an experiment, else ``other``."""
    found = "other"
    for frame in frames:
        m = FRAME.match(frame)
        if not m:
            continue
        function, module = m.groups()
        if function in ADAPTIVE:
            return function
        if found == "other" and module.startswith("experiments/") and ("stages" in module or "gate" in module):
            found = f"{module}:{function}"
    return found


def part_of(frames: list[str]) -> str:
    """Inside the adaptive evaluation: ``budget``, ``left`` or ``right`` side of the curves, with ``/square`` or
    ``/eot`` when the sample is inside Square on the standing images or an EOT attack."""
    part = "budget"
    for frame in frames:
        if "defence/convergence.py" in frame and frame.startswith("_run "):
            part = "left"
        elif "defence/convergence.py" in frame and frame.startswith("extend "):
            part = "right"
    kinds = [k for k, name in (("square", "square_on_standing "), ("eot", "attack_randomized ")) if
             any(f.startswith(name) for f in frames)]
    return "/".join([part, *kinds])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's sampling rate (-r), samples per second")
    args = parser.parse_args()
    total, model = collections.Counter(), collections.Counter()
    parts = collections.Counter()
    for frames, count in read_stacks(args.stacks):
        stage = stage_of(frames)
        total[stage] += count
        model[stage] += count if any(key in frames[-1] for key in MODEL_FRAMES) else 0
        if stage in ADAPTIVE:
            parts[(stage, part_of(frames))] += count
    seconds = 1.0 / args.rate
    print(f"{'seconds':>8} {'model':>7}  stage")
    for stage, count in total.most_common():
        print(f"{count * seconds:8.1f} {model[stage] * seconds:7.1f}  {stage}")
    print(f"{sum(total.values()) * seconds:8.1f} {sum(model.values()) * seconds:7.1f}  all")
    print(f"\n{'seconds':>8}  adaptive job / part")
    for (stage, part), count in parts.most_common():
        print(f"{count * seconds:8.1f}  {stage} / {part}")
    for side in ("budget", "left", "right"):
        side_total = sum(c for (_, p), c in parts.items() if p.split("/")[0] == side)
        print(f"{side_total * seconds:8.1f}  every job's {side}")


if __name__ == "__main__":
    main()
