"""The `lamina study` command: which claims, which seeds, where, at which preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamina.errors import ArgumentParser, ConfigError
from lamina.study import pilots
from lamina.study.claim import PRESETS, StudyContext, repo_configs
from lamina.study.report import write_index, write_report
from lamina.study.runs import Runner


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lamina study", description="Run the studies of the research note's claims and write each "
                "one's report with a verdict (DIR/<claim>/report.md) and DIR/index.md.")
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claims to study (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[5], metavar="N",
                   help="one number N: seeds 1..N; several numbers: exactly those seeds (default: 5, as make study)")
    p.add_argument("--out", default="study", help="folder for runs/, <claim>/ and index.md (default: study)")
    p.add_argument("--preset", default="cpu", help=f"sizes: {', '.join(PRESETS)} (default: cpu; gpu: one CUDA "
                   "device, bf16-mixed, one seed of every claim within one 10-minute call of an H100 (about 6.5 "
                   "minutes, estimated); test: toy sizes)")
    p.add_argument("--rehearse", action="store_true",
                   help="run the preset's code at toy sizes on the CPU, a handful of steps: the code path, not a "
                        "finding (--preset gpu --rehearse checks the gpu preset on a machine without CUDA)")
    p.add_argument("--configs", default=None, help="folder of the study configs (default: the repository's configs/)")
    p.add_argument("--device", default="auto", help="evaluations outside a fit: auto (cuda when present), cpu, cuda")
    p.add_argument("--isolate", action="store_true", help="run each fit in its own process, not in this one")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="fit up to N seeds at once, each seed of a group of claims (claims that share runs) in a "
                        "process of its own with one thread; the reports are then written here (default: 1, "
                        "everything in this process)")
    p.add_argument("--run-underpowered", action="store_true",
                   help="run every claim named, also a group of claims whose pilots (configs/study/pilots.yaml) "
                        "say the seeds cannot tell their margins (default: such a group is not run and each of its "
                        "claims reports not tested, with the seeds its pilot would need)")
    p.add_argument("--fits-for-seed", type=int, default=None, metavar="S",
                   help="run seed S's fits and evaluations only, and write no report (what --jobs gives each "
                        "process; another machine's share of a study)")
    return p


def seeds_from(values: list[int]) -> list[int]:
    if len(values) == 1:
        if values[0] < 1:
            raise ConfigError(f"--seeds: expected a count >= 1 or a list of seeds, got {values[0]}")
        return list(range(1, values[0] + 1))
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds: expected distinct seeds, got {' '.join(map(str, values))}")
    return list(values)


# CPU minutes one seed of a group's fits took at the cpu preset (one thread, 2026-12-01; world-v2
# 2026-12-07: its 1000-step fit took 10.3 CPU-minutes, so about 15.5 at 1500 steps, the small one
# about half): --jobs starts the longest units first, so that no core idles at the end while one long unit runs.
MINUTES_PER_SEED = {"reasoning-in-pretraining": 12.0, "world-v2": 23.0, "finetune-fragility": 6.0}


def main(argv: list[str] | None = None) -> dict:
    """`lamina study ...` (argv without the program name and subcommand); returns claim -> ClaimResult
    ({} with --fits-for-seed, which writes no report)."""
    from lamina.study import CLAIMS

    args = parser().parse_args(argv)
    names = list(dict.fromkeys(args.claims or CLAIMS))
    unknown = [name for name in names if name not in CLAIMS]
    if unknown:
        raise ConfigError(f"lamina study: unknown claim {unknown[0]!r} (expected one of {', '.join(CLAIMS)})")
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {args.preset!r}")
    for name in names:
        if args.preset not in CLAIMS[name].presets:
            raise ConfigError(f"--preset: claim {name} runs at {', '.join(CLAIMS[name].presets)}, got {args.preset!r}")
    check_device(args.preset, args.device, args.rehearse)
    seeds = seeds_from(args.seeds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a count >= 1, got {args.jobs}")
    if args.fits_for_seed is not None:
        if args.fits_for_seed not in seeds:
            raise ConfigError(f"--fits-for-seed: expected one of the seeds {' '.join(map(str, seeds))}, "
                              f"got {args.fits_for_seed}")
        for name in names:
            run_claim(args, name, [args.fits_for_seed], unit=True)
        return {}
    configs = configs_of(args)
    plan = pilots.plan(CLAIMS, names, args.preset, len(seeds), configs, args.run_underpowered, args.rehearse)
    groups: dict[str, list[str]] = {}
    for name in plan.run:
        groups.setdefault(CLAIMS[name].runs_with, []).append(name)
    if args.jobs > 1:
        run_units(args, groups, seeds)
    results = {}
    for name in names:  # every run is finished now (with --jobs) or is fitted here
        if name in plan.not_run:
            print(f"study {name}: not run: gate {pilots.GATE} failed: {plan.not_run[name].detail}")
            ctx = StudyContext(name, Path(args.out), seeds, args.preset, None, configs, rehearse=args.rehearse)
            result = pilots.not_run_result(CLAIMS[name], ctx, plan.not_run[name], plan.reach[name])
        else:
            result = run_claim(args, name, seeds)
        results[name] = result
        report = write_report(result, args.out)
        verdicts = result.verdicts()
        claim = result.claim_verdict(verdicts)
        print(f"study {name}: claim verdict: {claim.label} (primary: {result.primary or 'none'})")
        for contrast in result.contrasts:
            verdict = verdicts[contrast.name]
            if verdict is not None:
                st = contrast.stats
                span = f"{st.mean:+.3f} [{st.lo:+.3f}, {st.hi:+.3f}]" if st.lo is not None else (
                    f"{st.mean:+.3f}" if st.n else "no value")
                print(f"study {name}: {contrast.name} ({result.role(contrast)}): {verdict.label} ({span}, "
                      f"{st.n} seed(s))")
        print(f"study {name}: report in {report}")
    print(f"study: index in {Path(args.out) / 'index.md'}")
    return results


def check_device(preset: str, device: str, rehearse: bool = False) -> None:
    """The gpu preset's fits, and `--device cuda`, need CUDA: without it, one line that says what to
    run here instead (a rehearsal needs none: it runs on the CPU)."""
    import torch

    if torch.cuda.is_available():
        return
    if preset == "gpu" and not rehearse:
        raise ConfigError(f"--preset gpu: expected a machine with CUDA, got none here (torch.cuda.is_available() is "
                          f"False, --device {device}); run --preset cpu --device cpu on this machine, or add "
                          "--rehearse for the gpu preset's code at toy sizes on the CPU")
    if device.startswith("cuda"):
        raise ConfigError(f"--device {device}: expected a machine with CUDA, got none here (torch.cuda.is_available() "
                          f"is False); run --device cpu (or auto) with --preset {preset} on this machine")


def configs_of(args: argparse.Namespace) -> Path:
    """The study configs' folder: --configs, or the repository's configs/."""
    return Path(args.configs) if args.configs else repo_configs()


def run_claim(args: argparse.Namespace, name: str, seeds: list[int], unit: bool = False):
    """A claim's study over `seeds` (its fits run or are reused); its ClaimResult, no report.
    unit: one seed's share of a study (--fits-for-seed), nothing that reads every seed."""
    from lamina.study import CLAIMS

    out = Path(args.out)
    configs = configs_of(args)
    runner = Runner(out / "runs", name, isolate=args.isolate)
    return CLAIMS[name].run(StudyContext(name, out, seeds, args.preset, runner, configs, args.device, unit=unit,
                                         rehearse=args.rehearse))


def unit_words(args: argparse.Namespace, claims: list[str], seed: int) -> list[str]:
    words = [*claims, "--seeds", *map(str, args.seeds), "--fits-for-seed", str(seed), "--out", str(args.out),
             "--preset", args.preset, "--device", args.device]
    if args.configs:
        words += ["--configs", str(args.configs)]
    return words + (["--isolate"] if args.isolate else []) + (["--rehearse"] if args.rehearse else [])


def unit_order(groups: dict[str, list[str]], seeds: list[int]) -> list[tuple[str, list[str], int]]:
    """(group, its claims, seed) for every group and seed, the longest first (MINUTES_PER_SEED; a
    group not there counts 1), seeds in their order within a group."""
    units = [(group, claims, seed) for group, claims in groups.items() for seed in seeds]
    return sorted(units, key=lambda unit: (-MINUTES_PER_SEED.get(unit[0], 1.0), seeds.index(unit[2])))


def run_units(args: argparse.Namespace, groups: dict[str, list[str]], seeds: list[int]) -> None:
    """The fits and evaluations of each (group of claims, seed) in a `python -m lamina.study
    --fits-for-seed` process of its own (one torch thread, so that N processes share N cores), up
    to `args.jobs` at once, the longest first. The reports are then written in this process from
    the finished runs and the evaluations' caches. A unit that fails leaves DIR/index.md over what
    was reported before and ends the study with one line."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    units = unit_order(groups, seeds)

    def run(unit: tuple[str, list[str], int]) -> tuple[list[str], int, int]:
        _, claims, seed = unit
        # one write a line (a print's newline is a second write, which another thread's line can split)
        print(f"study: seed {seed} of {', '.join(claims)} in a process of its own\n", end="", flush=True)
        done = subprocess.run([sys.executable, "-m", "lamina.study", *unit_words(args, claims, seed)], env=env,
                              check=False)
        return claims, seed, done.returncode

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        failed = [(claims, seed, code) for claims, seed, code in pool.map(run, units) if code]
    if failed:
        index = write_index(Path(args.out))
        claims, seed, code = failed[0]
        raise ConfigError(f"lamina study: the process of seed {seed} of {', '.join(claims)} ended with exit status "
                          f"{code} (its lines above say why); the reports written so far are in {index}")


__all__ = ["MINUTES_PER_SEED", "check_device", "configs_of", "main", "parser", "run_claim", "run_units", "seeds_from", "unit_order",
           "unit_words"]
