"""The `lamina study` command: which claims, which seeds, where, at which preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamina.errors import ArgumentParser, ConfigError
from lamina.study.claim import PRESETS, StudyContext, repo_configs
from lamina.study.report import write_report
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


__all__ = ["main", "parser", "seeds_from"]
