"""Claim `density-familiarity`: density is learned with exposure: MLP states grow denser on
familiar text than on unfamiliar text over training, and denser on entities seen often than on
entities never seen.

Read off the shared world-v2 runs (lamina.study.world_runs): the instrumentation's density probes
(`sparsity/<probe>/mean`) and their gaps against `id` with within-run standard errors, and, per
seed, name-swapped windows scored on the final checkpoint (below).

Design. The exposure half of the claim is tested on **name-swapped paired windows**
(`lamina.probes.name_swapped_windows`): people-family documents (bios and recall questions, the
templates training used) about the 8 people of exposure bin 100, and the same documents, byte for
byte, with each name replaced by a novel person's (one no text of the run mentions). Every other
token is the same, so a pair of windows differs by exposure alone (and by the name's own letters).
Density (the share of MLP units with pre-activation > 0, the sign rule the config's
`instrument.sparsity.active: sign` counts, averaged over layers) is read only at the name's tokens
and the facts' value tokens (village, job, pet, food, thing, a pet's food or colour): the rest of a
window is the template, the same on both sides, which diluted the instrument's whole-window
`exposure/100` − `novel` gap about 8-fold (names are ~12% of its bytes). Per seed: the mean over
window pairs of seen − swapped, with its standard error over pairs (reported, not used by the rule).
The roster is dealt per data seed (`lamina.data.world.exposure_roster`) and the novel people drawn
per seed (`novel_people`), so the 95% interval over seeds covers which names are seen often, not
only training noise: a name's letters cannot make an effect that holds over seeds.

Primary (fixed before any run): that name-swapped contrast, exposure 100 − novel at name and value
positions (+). Why it, and not familiar − random: the claim's headline is that density is *learned
with exposure*, and this is the only contrast whose two arms differ in exposure alone (the same
documents, the same positions, exposure fixed by construction at 100 against 0, items drawn per
seed); familiar − random tokens also differs in order, syntax and token statistics, so it tests
"trained text vs token soup", which a network could show from any input statistics it learned.
It stays as a secondary, with familiar − shuffled.

Margin: DENSITY_MARGIN (0.01) for every density contrast: one point of the share of active MLP
units, about a twentieth of the fall training brings to mean density (0.50 at initialisation to
about 0.26 at the cpu preset's end); the same units at name positions. Fixed here; no run's noise.

Gates: the model learns its text; the id − id_b null probe is quiet (for the id contrasts); the
name-swap null pair is quiet: the same construction with two never-seen people (a roster person of
exposure bin 0 against another novel person) has the names' confound and not the effect, and its
95% interval over seeds must hold 0 (for the primary). Descriptive: the primary's two parts (name
tokens alone, value tokens alone), the instrument's whole-window exposure gaps (diluted), the gap's
growth from step 0 (every probe is 0.50 dense at initialisation under the sign rule, so it counts
familiar − random again), and the id − id_b null.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from lamina import tags
from lamina.compare.stats import summarize
from lamina.data import world
from lamina.pretrained import load_gpt
from lamina.probes import NameSwappedWindows, name_swapped_windows, world_seed
from lamina.study.claim import Claim, StudyContext
from lamina.study.evaluation import cached_json, checkpoint_key, device_of, fingerprint
from lamina.study.report import ClaimResult, Contrast, Figure, Gate
from lamina.study.runs import Run
from lamina.study.world_runs import (ARM, at, curve_series, has_values, null_probe_gate, per_seed, runs_gate, setup,
                                     train)
from lamina.verdict import Prediction

NAME = "density-familiarity"
SENTENCE = (
    "Density is learned with exposure: MLP states grow denser on familiar text than on unfamiliar text over "
    "training, and denser on entities seen often than on entities never seen."
)
PRIMARY = "seen often − never seen, name-swapped (exposure 100 − novel)"
# The smallest density difference of interest: one point of the share of active MLP units, about a
# twentieth of the change training itself brings to mean density (0.50 at initialisation, under the
# sign rule, to about 0.26 at the cpu preset's end). Fixed here, before any run; no run's noise.
DENSITY_MARGIN = 0.01
DENSITY_MARGIN_NOTE = ("margin 0.01: one point of the share of active MLP units, about a twentieth of the fall "
                       "training brings to mean density (0.50 at initialisation to about 0.26)")

# Name-swapped window pairs per contrast: 128 windows of the config's 128 tokens hold about 180
# name and 300 value tokens of each of the 8 people; the per-seed standard error over pairs is
# reported beside each value. The seen-often bin is the roster's highest, the null pair's its 0.
NAME_SWAP_WINDOWS = 128
KINDS = ("both", "name", "attribute")  # the positions read: names and values, names only, values only
CACHE_VERSION = "name-swap/v1"


# ---- the name-swapped measurement ----------------------------------------------------------------


@torch.no_grad()
def masked_density(model, windows: torch.Tensor, masks: dict[str, torch.Tensor], batch_size: int,
                   device) -> dict[str, np.ndarray]:
    """Per window and mask, the share of MLP units with pre-activation > 0 at the masked tokens,
    averaged over those tokens and every layer (nan for a window with no masked token)."""
    out: dict[str, list[np.ndarray]] = {kind: [] for kind in masks}
    for start in range(0, len(windows), batch_size):
        record: dict = {}
        model(windows[start:start + batch_size].to(device), record=record)
        active = torch.stack([(pre > 0).float().mean(-1) for pre in record["mlp_pre"]]).mean(0).double().cpu()
        for kind, mask in masks.items():
            m = mask[start:start + batch_size].double()
            out[kind].append(((active * m).sum(1) / m.sum(1)).numpy())
    return {kind: np.concatenate(parts) for kind, parts in out.items()}


def swap_difference(model, pair: NameSwappedWindows, batch_size: int, device) -> dict[str, tuple[float, float]]:
    """Per kind of position (KINDS), the mean over window pairs of seen − swapped density and its
    standard error over pairs (pairs where either side has no such token are left out)."""
    with_both = {side: {**masks, "both": masks["name"] | masks["attribute"]} for side, masks in pair.masks.items()}
    seen = masked_density(model, pair.seen, with_both["seen"], batch_size, device)
    swapped = masked_density(model, pair.swapped, with_both["swapped"], batch_size, device)
    out = {}
    for kind in KINDS:
        d = seen[kind] - swapped[kind]
        d = d[np.isfinite(d)]
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        out[kind] = (float(d.mean()) if len(d) else math.nan, se)
    return out


def name_swap_pairs(tokenizer, eot: int, block_size: int, data_seed: int, bins,
                    n_windows: int = NAME_SWAP_WINDOWS) -> dict[str, NameSwappedWindows]:
    """The run's pairs: bin max(bins)'s people against novel people, and (the null pair) bin 0's
    people against other novel people, all as data seed `data_seed` draws them."""
    by_bin = world.people_by_bin(bins, seed=data_seed)
    novel = world.novel_people(bins, seed=data_seed)
    top = max(by_bin)
    groups = {str(top): (by_bin[top], novel[:world.PEOPLE_PER_BIN])}
    if 0 in by_bin and top != 0:
        groups["0"] = (by_bin[0], novel[world.PEOPLE_PER_BIN:2 * world.PEOPLE_PER_BIN])
    return {b: name_swapped_windows(tokenizer, world_seed(data_seed, 0, f"study/name_swap/{b}"), people, partners,
                                    eot, block_size, n_windows)
            for b, (people, partners) in groups.items()}


def evaluate_name_swap(run: Run, device, batch_size: int = 32) -> dict[str, float]:
    """The final checkpoint's name-swapped differences, as `density/name_swap/<bin>/<kind>` (and
    `/se`); nothing where the run has no checkpoint or does not train the people family."""
    if not run.checkpoint.is_file():
        return {}
    loaded = load_gpt(str(run.checkpoint), run.spec.arm)
    hp = loaded.data_hparams
    if "people" not in (hp.get("families") or ()):
        return {}
    model = loaded.model.to(device).eval()
    eot = loaded.tokenizer.token_to_id("<|endoftext|>")
    pairs = name_swap_pairs(loaded.tokenizer, eot, model.config.block_size, int(hp.get("seed", 0)),
                            hp.get("exposure_bins"))
    out = {}
    for b, pair in pairs.items():
        for kind, (value, se) in swap_difference(model, pair, batch_size, device).items():
            out[tags.name_swap(b, kind)], out[tags.se(tags.name_swap(b, kind))] = value, se
    return out


def name_swap_values(ctx: StudyContext, run: Run, seed: int, device) -> dict[str, float]:
    """The name-swapped numbers of one seed's run: its own `density/name_swap/...` tags where its
    instrumentation logged them, else evaluated once from its final checkpoint (cached in the
    claim's folder, keyed by the checkpoint)."""
    names = [tags.name_swap(b, k) for b in ("100", "0") for k in KINDS]
    logged = {tag: at(run, tag) for tag in names + [tags.se(name) for name in names]}
    if math.isfinite(logged[tags.name_swap("100", "both")]):
        return logged
    if not run.checkpoint.is_file():
        return {}
    key = fingerprint(checkpoint_key(run.checkpoint), NAME_SWAP_WINDOWS, CACHE_VERSION)

    def compute() -> dict:
        ctx.progress(f"seed {seed}: density on name-swapped windows")
        return evaluate_name_swap(run, device)

    return cached_json(ctx.folder / f"name-swap-seed{seed}.json", key, "values", compute)


def null_pair_gate(values: dict[int, float]) -> Gate:
    """The null pair (two never-seen people, swapped) shows nothing: the 95% t-interval over seeds
    of its differences holds 0."""
    finite = [values[s] for s in sorted(values) if math.isfinite(values[s])]
    st = summarize(finite)
    ok = len(finite) == len(values) and st.n >= 2 and st.lo <= 0 <= st.hi
    detail = (f"{st.mean:+.4f} [{st.lo:+.4f}, {st.hi:+.4f}] over {st.n} seeds" if st.n >= 2
              else f"{st.n} seed(s) with a value: no interval")
    return Gate("null-pair-quiet", "name-swapped windows of a never-seen roster person (exposure bin 0) against a "
                "novel person, read as the primary is: does the 95% interval over seeds of their density difference "
                "hold 0 (the names' own letters, no exposure)?", ok, detail)


def run(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    device = device_of(ctx.device)
    swaps = {seed: name_swap_values(ctx, by_arm[ARM], seed, device) for seed, by_arm in runs.items()}
    swapped = lambda tag: {s: float(v.get(tag, math.nan)) for s, v in swaps.items()}  # noqa: E731
    swap = lambda b, kind: swapped(tags.name_swap(b, kind))  # noqa: E731
    swap_se = lambda b, kind: swapped(tags.se(tags.name_swap(b, kind)))  # noqa: E731
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds))
    result.gates = [runs_gate(runs), null_probe_gate(runs, tags.z(tags.gap("id_b")), "id − id_b (two samples of the "
                                                     "training distribution)"), null_pair_gate(swap("0", "both"))]
    result.primary = PRIMARY
    pred = Prediction(1, DENSITY_MARGIN, DENSITY_MARGIN_NOTE)
    gap = lambda probe, step=None: (lambda r: at(r, tags.gap(probe), step))  # noqa: E731
    density = lambda probe: (lambda r: at(r, tags.density(probe)))  # noqa: E731
    bins = [b for b in ("0", "1", "10", "100") if has_values(per_seed(runs, density(f"exposure/{b}")))]
    result.arms[ARM] = {
        **{f"name-swapped 100 − novel ({kind})": swap("100", kind) for kind in KINDS},
        **{f"name-swapped 100 − novel ({kind}) se": swap_se("100", kind) for kind in KINDS},
        "name-swapped 0 − novel (both)": swap("0", "both"),
        "name-swapped 0 − novel (both) se": swap_se("0", "both"),
        **{f"density/{p}": per_seed(runs, density(p)) for p in ("id", "id_b", "random", "shuffled", "novel")},
        **{f"density/exposure/{b}": per_seed(runs, density(f"exposure/{b}")) for b in bins},
        "density/id at step 0": per_seed(runs, lambda r: at(r, tags.density("id"), 0)),
        "density/random at step 0": per_seed(runs, lambda r: at(r, tags.density("random"), 0)),
    }
    needs = ("learns-the-text", "null-probe-quiet")
    random_end, random_start = per_seed(runs, gap("random")), per_seed(runs, gap("random", 0))
    result.contrasts = [
        Contrast.paired(PRIMARY, "density at the name and fact-value tokens of people-family documents about the "
                        "8 people of exposure bin 100 minus the same documents with each name swapped for a novel "
                        "person's (paired window for window; the roster and the novel people drawn per seed)",
                        swap("100", "both"), prediction=pred, needs=("learns-the-text", "null-pair-quiet")),
        Contrast.paired("familiar − random tokens", "density of id minus random (i.i.d. from the training unigram "
                        "distribution), at the end", random_end, prediction=pred, needs=needs),
        Contrast.paired("familiar − shuffled", "density of id minus the same windows shuffled (same tokens, no "
                        "order), at the end", per_seed(runs, gap("shuffled")), prediction=pred, needs=needs),
        Contrast.paired("name-swapped, name tokens only", "descriptive: the primary's name positions alone (a part "
                        "of the primary, not a test of its own)", swap("100", "name")),
        Contrast.paired("name-swapped, value tokens only", "descriptive: the primary's fact-value positions alone "
                        "(a part of the primary)", swap("100", "attribute")),
        Contrast.paired("name-swapped null pair (exposure 0 − novel)", "descriptive: two never-seen people swapped "
                        "(the null-pair-quiet gate reads its interval)", swap("0", "both")),
        Contrast.paired("learned: (familiar − random) end − step 0", "growth of the id − random gap over "
                        "training; descriptive: every probe is 0.50 dense at initialisation under the sign rule, "
                        "so this is familiar − random counted again, not a test of its own", random_end,
                        random_start),
        Contrast.paired("whole windows: exposure 100 − novel", "descriptive: the instrument's probes, density over "
                        "every token of bios (names ~12% of the bytes: the name effect diluted ~8x, which the "
                        "primary's positions remove)", per_seed(runs, gap("novel")),
                        per_seed(runs, gap("exposure/100"))),
        Contrast.paired("id − id_b (the null)", "two samples of the training distribution: should hold 0",
                        per_seed(runs, gap("id_b"))),
    ]
    if "0" in bins and "100" in bins:
        result.contrasts.append(Contrast.paired(
            "whole windows: exposure 100 − exposure 0", "descriptive: density on bios of people with 100 relative "
            "mentions minus the roster's bin 0 (never in the text), every token", per_seed(runs, gap("exposure/0")),
            per_seed(runs, gap("exposure/100"))))
    x, series = curve_series(runs, {p: tags.density(p) for p in ("id", "shuffled", "novel")})
    _, reference = curve_series(runs, {p: tags.density(p) for p in ("id_b", "random")})
    result.figures = [
        Figure("name_swapped_density", "Density difference, seen-often name − novel name (same documents), by "
               "the tokens read", "tokens read", "density difference", ["names and values", "names", "values"],
               {"exposure 100 − novel": [swap("100", k) for k in KINDS],
                "exposure 0 − novel (null pair)": [swap("0", k) for k in KINDS]}, kind="bar"),
        Figure("density_over_training", "Density (share of MLP units active) over training, by probe", "step",
               "density", x, series, reference),
        Figure("density_by_exposure", "Density at the end by the entity's exposure (whole windows)", "probe",
               "density", [f"exposure/{b}" for b in bins] + ["novel"],
               {ARM: [result.arms[ARM][f"density/exposure/{b}"] for b in bins] + [result.arms[ARM]["density/novel"]]},
               kind="bar"),
    ]
    result.notes = [
        "Name-swapped windows (`lamina.probes.name_swapped_windows`): the final checkpoint reads "
        f"{NAME_SWAP_WINDOWS} pairs of windows of people-family documents about the exposure-100 people, and the "
        "same documents with each name swapped for a novel person's (the null pair: exposure-0 people against "
        "other novel people). Density is the share of MLP units with pre-activation > 0 at the name and fact-value "
        "tokens, averaged over layers; each seed's value is the mean over window pairs of seen − swapped "
        "(its standard error over pairs in the table). The roster's bins and the novel people are drawn per data "
        "seed, so the interval over seeds covers which names are seen often.",
        "Whole-window density: `sparsity/<probe>/mean`, the share of MLP units whose pre-activation is > 0, averaged "
        "over tokens and layers; each gap is the run's `sparsity/gap/<probe>` (id minus the probe) with its "
        "within-run standard error. The id_b gap is the id contrasts' null probe; the margin is fixed in the "
        f"claim's code ({DENSITY_MARGIN:g}), not taken from any run's standard error.",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started,
                         **{"name-swapped windows": f"{NAME_SWAP_WINDOWS} pairs a contrast, of the final checkpoint"})
    return result


CLAIM = Claim(NAME, SENTENCE, run, group=ARM, primary=PRIMARY, margin=DENSITY_MARGIN)
