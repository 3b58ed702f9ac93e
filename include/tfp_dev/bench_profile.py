"""Where a night's time goes: one ``tfp run`` under py-spy, summarised by function.

    python -m tfp_dev.bench_profile --families 50000 [--shape issue17] [--label after]   (`make profile`)

Needs ``pip install py-spy``. Samples every thread of the run (idle ones left out) and writes
``bench/profile-<N>[-<label>].md`` (a label keeps an earlier profile to compare with): the tfp
functions and the library calls that hold the most samples, inclusive and self, as shares of the
run. A flame graph can be drawn from the raw stacks it keeps beside the run (``profile.txt``).
"""

from __future__ import annotations

import argparse
import re
import shutil
from collections import Counter
from pathlib import Path

from tfp_dev.bench import DEFAULT_SHAPE, REPO, SEED, SHAPES, generate_feeds, migrated_airflow_home, run_night

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def _where(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    module = path.split("site-packages/")[-1] if "site-packages/" in path else path.split("include/")[-1]
    return f"{m['function']} ({module.removesuffix('.py').replace('/', '.')})"


def summarise(raw: Path) -> tuple[int, Counter, Counter, Counter]:
    """(samples, inclusive by tfp function, self by any function, inclusive by package) from py-spy's raw stacks."""
    total, inclusive, own, packages = 0, Counter(), Counter(), Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_where(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:  # a sample of a process with no Python frame (native code, start-up)
            frames = ["(no Python frame)"]
        for frame in set(frames):
            if "(tfp." in frame:
                inclusive[frame] += n
        own[frames[-1]] += n
        for package in {f.rsplit("(", 1)[-1].split(".")[0].rstrip(")") for f in frames if "(" in f}:
            packages[package] += n
    return total, inclusive, own, packages


def render(families: int, wall_s: float, total: int, inclusive: Counter, own: Counter, packages: Counter,
           top: int = 25, shape: str = "six") -> str:
    def table(title: str, counts: Counter) -> list[str]:
        rows = [f"| {name.replace('|', '/')} | {n / total:.1%} |" for name, n in counts.most_common(top)]
        return ["", f"**{title}**", "", "| where | share of samples |", "|---|---:|", *rows]

    return "\n".join([
        f"# Profile of a {families:,}-family night ({SHAPES[shape].describe()})", "",
        f"`python -m tfp_dev.bench_profile --families {families} --shape {shape}`: one `tfp run` under `py-spy record --subprocesses "
        f"--format raw` (idle threads left out), {total:,} samples, {wall_s:.0f} s end to end (sampling slows it).",
        *table("tfp functions, inclusive (time in them and what they call)", inclusive),
        *table("Functions, self (time in the function's own code)", own),
        *table("Packages, inclusive", packages), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.bench_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=REPO / "bench")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--rate", type=int, default=50, help="samples per second")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=DEFAULT_SHAPE, help="the borough's sources and partners")
    parser.add_argument("--label", default="", help="added to the file name, e.g. 'after'")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy")
    if not spy:
        parser.error("py-spy is not installed: pip install py-spy")
    work = args.work.resolve()
    shape = SHAPES[args.shape]
    name = f"profile-{args.families}" + (f"-{args.label}" if args.label else "")
    feeds, _ = generate_feeds(work, args.families, args.seed, shape)
    run_dir = work / name
    raw = work / f"{name}.txt"
    run = run_night(feeds, run_dir, migrated_airflow_home(work), shape=shape,
                    wrap=[spy, "record", "--subprocesses", "--format", "raw", "--rate", str(args.rate), "--nonblocking",
                          "-o", str(raw), "--"])
    if not run["succeeded"]:
        print(f"the run failed: see {run_dir / 'tfp-run.log'}")
        return 1
    out = args.out.resolve() / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(args.families, run["wall_s"], *summarise(raw), shape=args.shape), encoding="utf-8")
    print(f"wrote {out} (raw stacks: {raw})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
