"""Proxy tuning (Liu et al. 2024, "Tuning Language Models by Proxy"): decode a base model as if it
had been tuned, by adding to its next-token logits the difference a small tuned expert makes over
its untuned self (the anti-expert):

    logits = logits_base + alpha * (logits_expert - logits_anti)      (alpha = 1 in the paper)

over the shared real vocabulary (Liu et al. define the proxy's next-token distribution as the
softmax of this sum), then greedy (temperature 0) or sampled as usual. The three models
decode together, each with its own KV cache, one forward of each per new token; they must share
the tokenizer (the same ids), and may differ in size. With expert = anti the difference is exactly
zero and the proxy is the base, token for token and logit for logit.

`lamina proxy --base B --expert E --anti A [--out DIR] [--items N]` runs the knowledge evaluations
of lamina.finetune.retention (world fact questions, one- and two-hop, and any `--task-file`) on
base, expert, anti-expert and proxy, and writes DIR/proxy.json and DIR/proxy.md: each accuracy
with its Wilson interval, n and chance level, and the proxy's paired comparison with the base and
the expert on the same items (discordant pairs and the exact McNemar p-value).

`sweep_logits` reads the proxy at several alphas at once for forced-choice scoring
(lamina.finetune.retention.choice_accuracy): the three models run once a batch, and each alpha is
a different sum of the same logits. Liu et al. use alpha = 1 in their main experiments and name
alpha as the knob that trades the expert's guidance against the base: larger alpha moves the proxy
further towards what the expert learned, away from the base.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from scipy import stats

from lamina.data.tokenizer import EOT
from lamina.errors import ArgumentParser, ConfigError
from lamina.pretrained import LoadedCheckpoint, load_gpt, same_tokenizer
from lamina.finetune.retention import Accuracy, GreedyCompleter, Logits, RetentionSuite, held_out_seed, model_logits
from lamina.model import GPT, KVCache, decode


class ProxyTuned:
    """A base GPT steered by an expert and an anti-expert; `generate` decodes like GPT.generate."""

    def __init__(self, base: GPT, expert: GPT, anti: GPT, alpha: float = 1.0):
        sizes = {m.config.vocab_size for m in (base, expert, anti)}
        if len(sizes) != 1:
            raise ConfigError(f"--expert/--anti: expected one vocab_size for all three models, got {sorted(sizes)}")
        self.base, self.expert, self.anti, self.alpha = base, expert, anti, alpha
        self.vocab_size = base.config.vocab_size
        self.block_size = min(m.config.block_size for m in (base, expert, anti))

    @property
    def models(self) -> tuple[GPT, GPT, GPT]:
        return self.base, self.expert, self.anti

    def combine(self, base: torch.Tensor, expert: torch.Tensor, anti: torch.Tensor) -> torch.Tensor:
        """The proxy's logits over the real vocabulary (padding ids dropped), float32."""
        v = self.vocab_size
        return base[..., :v].float() + self.alpha * (expert[..., :v].float() - anti[..., :v].float())

    def step(self, idx: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Run `idx` after each model's cached positions; the proxy's logits at the last position."""
        last = [model(idx, kv_cache=cache)[0][:, -1] for model, cache in zip(self.models, caches, strict=True)]
        return self.combine(*last)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop_id: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        keep_logits: bool = False,
    ):
        """Continue every row of `idx` [B, T] by up to `max_new_tokens` tokens, as GPT.generate
        does (same stop rule, same return): (tokens [B, n], lengths [B]); with `keep_logits`, also
        the proxy's logits at every step, [B, n, vocab_size]. Call it with the models in eval mode."""
        T = idx.shape[1]
        if max_new_tokens < 1 or T + max_new_tokens - 1 > self.block_size:
            raise ValueError(
                f"generate: a prompt of {T} tokens and {max_new_tokens} new ones exceed block_size={self.block_size}"
            )
        stops = None if stop_id is None else torch.as_tensor(stop_id, device=idx.device).view(-1)
        caches = [KVCache(model.config.n_layer) for model in self.models]
        kept: list[torch.Tensor] = []
        out = decode(
            self.step(idx, caches), lambda token: self.step(token[:, None], caches), max_new_tokens, temperature,
            stops, generator, on_logits=kept.append if keep_logits else None,
        )
        return (*out, torch.stack(kept, dim=1)) if keep_logits else out


def sweep_logits(models: dict[str, GPT], trio: tuple[str, str, str], proxies: dict[str, float]) -> Logits:
    """`Logits` of every model in `models` under its name and, beside them, of each proxy (name ->
    alpha) of the trio (base, expert, anti: names in `models`), `ProxyTuned.combine` of the same
    three logits: the models run once a batch, whatever the number of alphas."""
    base, expert, anti = trio
    read = model_logits(models)
    combiners = {name: ProxyTuned(models[base], models[expert], models[anti], alpha) for name, alpha in proxies.items()}

    def logits(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = read(idx)
        for name, proxy in combiners.items():
            out[name] = proxy.combine(out[base], out[expert], out[anti])
        return out

    return logits


def proxy_completer(proxy: ProxyTuned, tokenizer, eot: int, device, batch_size: int) -> GreedyCompleter:
    """Greedy completions of the proxy (each model with its KV cache), as `GreedyCompleter.for_model`."""
    return GreedyCompleter(lambda idx, n, stop: proxy.generate(idx, n, temperature=0, stop_id=stop), tokenizer, eot,
                           proxy.block_size, device, batch_size)


# ---- the command ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lamina proxy", description="Proxy-tune a base model with an expert and an anti-expert, "
                "and evaluate base, expert, anti-expert and proxy on world facts (and task files).")
    p.add_argument("--base", required=True, help="lamina checkpoint of the base model")
    p.add_argument("--expert", required=True, help="lamina checkpoint of the tuned (small) expert")
    p.add_argument("--anti", required=True, help="lamina checkpoint of the expert before tuning (the anti-expert)")
    p.add_argument("--out", default="proxy", help="folder for proxy.json and proxy.md (default: proxy)")
    p.add_argument("--items", type=int, default=None, help="at most this many distinct questions per fact family")
    p.add_argument("--task-file", action="append", default=[], help=".jsonl of {prompt, answer}; repeatable")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of (expert - anti) in the logits (default 1)")
    p.add_argument("--seed", type=int, default=None, help="world seed of the questions (default: derived from "
                   "the base's data.seed, never equal to it)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts decoded together")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.items is not None and args.items < 1:
        raise ConfigError(f"--items: expected an integer >= 1, got {args.items}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")
    if not math.isfinite(args.alpha):
        raise ConfigError(f"--alpha: expected a finite number, got {args.alpha}")


def load_trio(base: str, expert: str, anti: str) -> dict[str, LoadedCheckpoint]:
    """The three checkpoints (one load for a path given twice), refused unless they share a tokenizer."""
    loaded: dict[str, LoadedCheckpoint] = {}
    by_path: dict[str, LoadedCheckpoint] = {}
    for name, path in (("base", base), ("expert", expert), ("anti", anti)):
        key = str(Path(path).resolve())
        if key not in by_path:
            by_path[key] = load_gpt(path, f"--{name}")
        loaded[name] = by_path[key]
    for name in ("expert", "anti"):
        why = same_tokenizer(loaded["base"], loaded[name])
        if why:
            raise ConfigError(f"--{name}: expected the tokenizer and vocabulary of --base, got another ({why})")
    return loaded


def paired(a: Accuracy, b: Accuracy) -> dict:
    """a against b on the same items: the difference, discordant pairs, exact McNemar p-value."""
    a_only = sum(x and not y for x, y in zip(a.outcomes, b.outcomes, strict=True))
    b_only = sum(y and not x for x, y in zip(a.outcomes, b.outcomes, strict=True))
    p = stats.binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    return {"difference": a.value - b.value, "only_first": a_only, "only_second": b_only, "mcnemar_p": float(p)}


def evaluate(trio: dict[str, LoadedCheckpoint], suite: RetentionSuite, device, batch_size: int, alpha: float):
    """Accuracy of base, expert, anti and proxy on every set of the suite."""
    tokenizer = trio["base"].tokenizer
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise ConfigError(f"--base: expected a tokenizer with {EOT}, got one without")
    models = {name: loaded.model.to(device).eval() for name, loaded in trio.items()}
    proxy = ProxyTuned(models["base"], models["expert"], models["anti"], alpha)
    completers = {name: GreedyCompleter.for_model(m, tokenizer, eot, batch_size) for name, m in models.items()}
    completers["proxy"] = proxy_completer(proxy, tokenizer, eot, device, batch_size)
    return {name: suite.evaluate(complete) for name, complete in completers.items()}


def report(args, seed: int, results: dict[str, dict[str, Accuracy]]) -> dict:
    tags = list(results["base"])
    return {
        "base": args.base, "expert": args.expert, "anti": args.anti, "alpha": args.alpha, "seed": seed,
        "decoding": "greedy, KV cache, prompts after <|endoftext|>",
        "results": {name: {tag: acc.summary() for tag, acc in by_tag.items()} for name, by_tag in results.items()},
        "paired": {
            tag: {
                "proxy_vs_base": paired(results["proxy"][tag], results["base"][tag]),
                "proxy_vs_expert": paired(results["proxy"][tag], results["expert"][tag]),
            }
            for tag in tags
        },
    }


def markdown(summary: dict) -> str:
    lines = [
        "# Proxy tuning", "",
        f"logits = base + {summary['alpha']} x (expert - anti); {summary['decoding']}; "
        f"question seed {summary['seed']}.",
        "",
        f"- base: `{summary['base']}`",
        f"- expert: `{summary['expert']}`",
        f"- anti-expert: `{summary['anti']}`",
        "",
        "Exact-match accuracy with its 95% Wilson interval; chance is a model that knows each question form's",
        "commonest answer and no fact. Paired: the proxy minus the other on the same items, with the items only",
        "one of them gets right and the exact McNemar p-value.", "",
        "| set | model | accuracy | 95% interval | n | chance |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for tag in summary["paired"]:
        for name in ("base", "expert", "anti", "proxy"):
            r = summary["results"][name][tag]
            lines.append(f"| {tag} | {name} | {r['accuracy']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {r['n']} | "
                         f"{r['chance']:.3f} |")
    lines += ["", "| set | contrast | difference | only proxy | only other | McNemar p |",
              "| --- | --- | --- | --- | --- | --- |"]
    for tag, contrasts in summary["paired"].items():
        for contrast, c in contrasts.items():
            lines.append(f"| {tag} | {contrast.replace('_', ' ')} | {c['difference']:+.3f} | {c['only_first']} | "
                         f"{c['only_second']} | {c['mcnemar_p']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """`lamina proxy ...` (argv without the program name and subcommand); returns the summary."""
    args = parser().parse_args(argv)
    check_args(args)
    trio = load_trio(args.base, args.expert, args.anti)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    seed = args.seed if args.seed is not None else held_out_seed(int(trio["base"].data_hparams.get("seed", 0)))
    suite = RetentionSuite(trio["base"].tokenizer, seed, args.items, args.task_file)
    summary = report(args, seed, evaluate(trio, suite, device, args.batch_size, args.alpha))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "proxy.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (out / "proxy.md").write_text(markdown(summary), encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--out: expected a writable folder, got {str(out)!r} ({err.strerror or err})") from err
    for tag in summary["paired"]:
        results = summary["results"]
        accs = ", ".join(f"{name} {results[name][tag]['accuracy']:.3f}" for name in ("base", "expert", "proxy"))
        print(f"lamina proxy: {tag}: {accs} (n {summary['results']['base'][tag]['n']})")
    print(f"lamina proxy: report in {out / 'proxy.md'}")
    return summary


__all__ = ["ProxyTuned", "evaluate", "load_trio", "main", "markdown", "paired", "parser", "proxy_completer",
           "sweep_logits"]
