"""The `lamina study` command: which claims, which seeds, where, at which preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamina.errors import ArgumentParser, ConfigError
from lamina.study.claim import PRESETS, StudyContext, repo_configs
from lamina.study.report import write_index, write_report
from lamina.study.runs import Runner


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lamina study", description="Run the studies of the research note's claims and write each "
                "one's report with a verdict (DIR/<claim>/report.md) and DIR/index.md.")
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claims to study (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[3], metavar="N",
                   help="one number N: seeds 1..N; several numbers: exactly those seeds (default: 3)")
    p.add_argument("--out", default="study", help="folder for runs/, <claim>/ and index.md (default: study)")
    p.add_argument("--preset", default="cpu", help=f"sizes: {', '.join(PRESETS)} (default: cpu)")
    p.add_argument("--configs", default=None, help="folder of the study configs (default: the repository's configs/)")
    p.add_argument("--device", default="auto", help="evaluations outside a fit: auto (cuda when present), cpu, cuda")
    p.add_argument("--isolate", action="store_true", help="run each fit in its own process, not in this one")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N groups of claims at once, each in its own process with one thread (claims that "
                        "share runs form a group and run one after another; default: 1, everything here)")
    return p


def seeds_from(values: list[int]) -> list[int]:
    if len(values) == 1:
        if values[0] < 1:
            raise ConfigError(f"--seeds: expected a count >= 1 or a list of seeds, got {values[0]}")
        return list(range(1, values[0] + 1))
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds: expected distinct seeds, got {' '.join(map(str, values))}")
    return list(values)


def main(argv: list[str] | None = None) -> dict:
    """`lamina study ...` (argv without the program name and subcommand); returns claim -> ClaimResult."""
    from lamina.study import CLAIMS

    args = parser().parse_args(argv)
    names = args.claims or list(CLAIMS)
    unknown = [name for name in names if name not in CLAIMS]
    if unknown:
        raise ConfigError(f"lamina study: unknown claim {unknown[0]!r} (expected one of {', '.join(CLAIMS)})")
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(PRESETS)}, got {args.preset!r}")
    seeds = seeds_from(args.seeds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a count >= 1, got {args.jobs}")
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        groups.setdefault(CLAIMS[name].runs_with, []).append(name)
    if args.jobs > 1 and len(groups) > 1:
        return run_groups(args, list(groups.values()))
    out = Path(args.out)
    configs = Path(args.configs) if args.configs else repo_configs()
    results = {}
    for name in dict.fromkeys(names):
        claim = CLAIMS[name]
        if args.preset not in claim.presets:
            raise ConfigError(f"--preset: claim {name} runs at {', '.join(claim.presets)}, got {args.preset!r}")
        runner = Runner(out / "runs", name, isolate=args.isolate)
        ctx = StudyContext(name, out, seeds, args.preset, runner, configs, args.device)
        result = claim.run(ctx)
        report = write_report(result, out)
        results[name] = result
        gates = result.gate_map
        for contrast in result.contrasts:
            verdict = contrast.verdict(gates)
            if verdict is not None:
                st = contrast.stats
                span = f"{st.mean:+.3f} [{st.lo:+.3f}, {st.hi:+.3f}]" if st.lo is not None else (
                    f"{st.mean:+.3f}" if st.n else "no value")
                print(f"study {name}: {contrast.name}: {verdict.verdict} ({span}, {st.n} seed(s))")
        print(f"study {name}: report in {report}")
    print(f"study: index in {out / 'index.md'}")
    return results


def group_words(args: argparse.Namespace, claims: list[str]) -> list[str]:
    words = [*claims, "--seeds", *map(str, args.seeds), "--out", str(args.out), "--preset", args.preset,
             "--device", args.device]
    if args.configs:
        words += ["--configs", str(args.configs)]
    return words + (["--isolate"] if args.isolate else [])


def run_groups(args: argparse.Namespace, groups: list[list[str]]) -> dict:
    """Each group of claims in its own `python -m lamina.study` process (one torch thread each, so
    that N processes share N cores), up to `args.jobs` at once; then DIR/index.md over them all.
    Returns claim -> its result.json (a dict)."""
    import json
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def run(claims: list[str]) -> tuple[list[str], int]:
        print(f"study: starting {', '.join(claims)} in a process of its own", flush=True)
        done = subprocess.run([sys.executable, "-m", "lamina.study", *group_words(args, claims)], env=env, check=False)
        return claims, done.returncode

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        finished = list(pool.map(run, groups))
    out = Path(args.out)
    index = write_index(out)
    failed = [(claims, code) for claims, code in finished if code]
    if failed:
        claims, code = failed[0]
        raise ConfigError(f"lamina study: the process of {', '.join(claims)} ended with exit status {code} "
                          f"(its lines above say why); the other groups' reports are in {index}")
    print(f"study: index in {index}")
    results = {}
    for claims, _ in finished:
        for name in claims:
            results[name] = json.loads((out / name / "result.json").read_text(encoding="utf-8"))
    return results


__all__ = ["group_words", "main", "parser", "run_groups", "seeds_from"]
