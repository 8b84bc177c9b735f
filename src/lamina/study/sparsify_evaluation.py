"""sparsify-difficulty's evaluation outside the fit (lamina.study.claims.sparsify_difficulty): held-out
problems of every arithmetic level decoded greedily from a world-v2 run's final checkpoint, and each
prompt's states read from one forward of the prompt alone, in the trained network and in an
untrained twin of its shape: the density over the prompt's own tokens (after the prefix every prompt
shares) and the last layer's measures at the last prompt token. Cached per checkpoint
(`cached_problems`, lamina.study.evaluation.cached_json)."""

from __future__ import annotations

import dataclasses
import math

import torch

from lamina.data import world
from lamina.finetune.retention import GreedyCompleter, score, token_budget
from lamina.instrument.lastlayer import STATS, LastLayerProbe, lastlayer_values, prompt_hidden_states, prompts_probe
from lamina.model import GPT
from lamina.pretrained import load_gpt
from lamina.probes import world_seed
from lamina.study.claim import StudyContext
from lamina.study.evaluation import arith_items, cached_json, checkpoint_key, fingerprint, training_questions
from lamina.study.runs import Run
from lamina.study.world_runs import Preset

MEASURES = ("density", *STATS)  # what is kept of each problem, per network
UNTRAINED_SALT = 7_919  # the untrained network of seed s is initialised from torch seed s + this


def shared_prefix(probe: LastLayerProbe) -> int:
    """How many leading tokens every row of the probe shares (at most its shortest row less one, so
    that every row keeps its last token): positions whose states are the same in every row."""
    shortest = int(probe.positions.min())
    same = (probe.tokens[:, : shortest] == probe.tokens[:1, : shortest]).all(dim=0)
    differs = torch.nonzero(~same)
    return int(differs[0]) if len(differs) else shortest


@torch.no_grad()
def prompt_density(model, probe: LastLayerProbe, start: int, batch_size: int, device) -> list[float]:
    """Per row, the share of MLP units with pre-activation > 0, averaged over every layer and over
    the positions from `start` to the row's last prompt token (right padding after it cannot change
    them: attention is causal)."""
    order = torch.argsort(probe.positions, stable=True)
    out = [math.nan] * len(probe)
    for first in range(0, len(probe), batch_size):
        rows = order[first:first + batch_size]
        pos = probe.positions[rows]
        record: dict = {}
        model(probe.tokens[rows, : int(pos.max()) + 1].to(device), record=record)
        active = torch.stack([(pre > 0).float().mean(dim=-1) for pre in record["mlp_pre"]]).mean(0).cpu()  # [B, T]
        cols = torch.arange(active.shape[1])
        inside = ((cols >= start) & (cols <= pos[:, None])).float()
        for r, value in zip(rows.tolist(), ((active * inside).sum(1) / inside.sum(1)).tolist()):
            out[r] = float(value)
    return out


def problem_values(model, probe: LastLayerProbe, start: int, batch_size: int, device) -> dict[str, list[float]]:
    """Each row's density (`prompt_density`) and last-layer stats at its last prompt token."""
    h = prompt_hidden_states(model, probe, batch_size, device).float()
    values = {s: v.cpu().tolist() for s, v in lastlayer_values(h).items()}
    return {"density": prompt_density(model, probe, start, batch_size, device), **values}


def untrained_twin(model: GPT, seed: int, device) -> GPT:
    """A network of the model's shape at a random initialisation, every weight random (the run's
    own step 0 starts its blocks' projections at zero, a network blind to its context that would
    give every prompt the same last state); the global RNG is left as it was."""
    config = dataclasses.replace(model.config, zero_init_projections=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + UNTRAINED_SALT)
        return GPT(config).to(device).eval()


def evaluate_problems(run: Run, seed: int, preset: Preset, device) -> dict:
    """Held-out problems of every level: each one's greedy correctness (with its thought), its
    prompt's length in tokens, and its states in the trained network and in an untrained one."""
    loaded = load_gpt(str(run.checkpoint), run.spec.arm)
    model = loaded.model.to(device).eval()
    tokenizer = loaded.tokenizer
    eot = tokenizer.token_to_id("<|endoftext|>")
    exclude = training_questions(loaded.data_hparams)
    trained = set(loaded.data_hparams.get("levels") or world.ARITH_LEVELS)
    complete = GreedyCompleter.for_model(model, tokenizer, eot, preset.batch_size)
    drawn = {}
    for level in world.ARITH_LEVELS:
        items, info = arith_items(world_seed(seed, level, "study/difficulty/arith"), level, preset.problems, exclude)
        if items:
            drawn[level] = (items, info)
    prompts = [it.prompt for items, _ in drawn.values() for it in items]
    row_levels = [k for k, (items, _) in drawn.items() for _ in items]
    # Arithmetic prompts are about 20 tokens at most, far inside any block: none is cut (a longer one would be skipped).
    probe = prompts_probe(tokenizer, prompts, row_levels, eot, model.config.block_size)
    if probe.skipped:
        raise ValueError(f"{probe.skipped} arithmetic prompts longer than model.block_size={model.config.block_size}")
    start = shared_prefix(probe)
    nets = {"trained": model, "untrained": untrained_twin(model, seed, device)}
    values = {name: problem_values(net, probe, start, preset.batch_size, device) for name, net in nets.items()}
    lengths = probe.lengths.tolist()
    levels, row = {}, 0
    for level, (items, info) in drawn.items():
        acc = score(complete, items, token_budget(items, tokenizer))
        rows = slice(row, row + len(items))
        row += len(items)
        levels[str(level)] = {
            "correct": [bool(o) for o in acc.outcomes], "length": lengths[rows],
            **{m: values["trained"][m][rows] for m in MEASURES},
            "untrained": {m: values["untrained"][m][rows] for m in MEASURES},
            "trained": level in trained, "held_out": info["held_out"],
        }
    return levels


def cached_problems(ctx: StudyContext, run: Run, seed: int, preset: Preset, device) -> dict:
    key = fingerprint(checkpoint_key(run.checkpoint), preset.problems, seed, "difficulty/v2")

    def compute() -> dict:
        ctx.progress(f"seed {seed}: decoding held-out problems of every level")
        return evaluate_problems(run, seed, preset, device)

    return cached_json(ctx.folder / f"problems-seed{seed}.json", key, "levels", compute)


__all__ = ["MEASURES", "UNTRAINED_SALT", "cached_problems", "evaluate_problems", "problem_values", "prompt_density",
           "shared_prefix", "untrained_twin"]
