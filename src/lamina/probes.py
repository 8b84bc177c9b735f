"""Fixed probe sets: what the instrumentation feeds the model to measure it (DESIGN.md, "Measures").

Probes are built once at fit start from the data module and never change during a run, so every
curve compares the same inputs. They are a pure function of (data seed, probe seed, config): the
same on every machine and on resume. Nothing here touches the global torch / numpy / Python RNG;
every draw comes from a `numpy.random.Generator` seeded by `numpy.random.SeedSequence`.

Activation probes (token windows `[n_windows, block_size]`, about `tokens` tokens each):

- `id`: held-out windows of the training distribution: random, non-overlapping windows of the
  packed validation split (documents separated by `<|endoftext|>`, as training sees them).
- `id_b`: a second sample of the same distribution, disjoint from `id` (other windows of the val
  split). `sparsity/gap/id_b` is the noise floor any other gap must clear.
- `shuffled`: the tokens of `id`, permuted within each window (same unigram statistics, no order).
  Its windows pair with `id`'s one to one, so its gaps are paired differences.
- `random`: tokens drawn i.i.d. from the training split's unigram distribution: familiar tokens,
  no structure. It never holds a token the training split lacks.
- `random_uniform`: uniform over the tokenizer's ordinary ids (special tokens excluded). With
  byte tokens most of these never occur in training, so it mixes untrained embeddings into
  "unfamiliar": read it beside `random`, not instead of it.
- `ood/<family>`: built-in corpus families (prose, arith, strings) the run does not train on
  (`data.source: world`).
- `family/<f>`: every world family (world v2's people and context included), whatever the run
  trains on, from the generator's defaults: runs trained with and without a family are measured on
  the same text (same data and probe seeds).
- `ood/<file stem>`: each file of `data.probe_files`, read as UTF-8 text.
- `level/<k>`: arithmetic examples of difficulty level k (`data.source: world`); `ood/level/<k>`
  instead for a level `data.levels` holds out (the same windows a run of every level calls
  `level/<k>`).
- `ood/task/<task>`: each task `data.tasks` holds out of a family the run trains (`+` written
  `_`: `ood/task/sort_reverse`), at the trained arithmetic levels where the task has any.
- `exposure/<bin>`, `novel` (a run that trains world v2's people family): people-family text
  about the roster people of one exposure bin (`data.exposure_bins`), and about novel people who
  never occur in training, in the same templates. `exposure/0` and `novel` are both unseen
  people: their gap is a null.

Every activation probe has the same number of windows as `id` (a file shorter than that is noted),
so a contrast between probes is not a contrast of sample sizes, except where `family_tokens` gives
the family and level probes fewer (the first windows of the same streams; noted, and their gaps'
standard errors count the windows they hold); the family mix of `id` (world corpus) is reported in the notes, so that a contrast with a `family/...` or `ood/...` probe can be
read as one of families.

Task probe (for ablation): world `strings` examples, `examples_per_task` per task, packed whole
into rows; targets are the answer tokens (after `->`) and every target carries its task's index.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from lamina.data import world

READ_CHUNK = 1 << 20  # bytes of a probe file read at a time
UNIGRAM_SAMPLE_TOKENS = 1 << 24  # tokens of the training split counted for the `random` probe


@dataclass(frozen=True)
class TaskProbe:
    """Rows of whole examples: `inputs` [n, T] int64; `targets` [n, T] (-1: not scored);
    `task_ids` [n, T] index into `tasks` where scored, -1 elsewhere."""

    inputs: torch.Tensor
    targets: torch.Tensor
    task_ids: torch.Tensor
    tasks: tuple[str, ...]

    @property
    def scored_tokens(self) -> int:
        return int((self.targets >= 0).sum())


@dataclass
class ProbeSet:
    """Activation probes by name (in logging order), the task probe, and notes on what was skipped
    or shrunk, and why."""

    probes: dict[str, torch.Tensor] = field(default_factory=dict)
    tasks: TaskProbe | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{name}: {w.shape[0]} windows x {w.shape[1]} tokens" for name, w in self.probes.items()]
        if self.tasks is not None:
            lines.append(
                f"tasks: {len(self.tasks.tasks)} string tasks, {self.tasks.inputs.shape[0]} rows, "
                f"{self.tasks.scored_tokens} answer tokens"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---- seeds ---------------------------------------------------------------------------------------


def probe_rng(data_seed: int, probe_seed: int, purpose: str) -> np.random.Generator:
    """A generator owned by one probe: a pure function of the seeds and the probe's name."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(_entropy(data_seed, probe_seed, purpose))))


def world_seed(data_seed: int, probe_seed: int, purpose: str) -> int:
    """A world-corpus seed for one probe, far from the training stream's seed (`data.seed`)."""
    return int(np.random.SeedSequence(_entropy(data_seed, probe_seed, purpose)).generate_state(1, np.uint64)[0] >> 1)


def _entropy(data_seed: int, probe_seed: int, purpose: str) -> list[int]:
    digest = hashlib.sha256(purpose.encode("utf-8")).digest()  # never hash(): it is salted per process
    return [int(data_seed) & (2**63 - 1), int(probe_seed) & (2**63 - 1), int.from_bytes(digest[:8], "little")]


# ---- building blocks (plain arrays in, int64 tensors out) ----------------------------------------


def n_windows_for(tokens: int, block_size: int) -> int:
    """Windows of block_size for a probe of about `tokens` tokens (at least one)."""
    return max(1, tokens // block_size)


def held_out_windows(
    data: np.ndarray, block_size: int, n_windows: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint samples (`id`, `id_b`) of non-overlapping windows of `data`.

    `data` is cut into slots of block_size tokens; a random permutation of the slots gives `id`
    its first n and `id_b` the next n, so no token position is in both. With fewer than 2n slots
    each gets half of them (at least one for `id`; `id_b` may then be empty)."""
    n_slots = len(data) // block_size
    if n_slots < 1:
        raise ValueError(f"need at least {block_size} tokens for a probe window, got {len(data)}")
    n = min(n_windows, n_slots // 2) if n_slots >= 2 else 0
    order = rng.permutation(n_slots)
    first = order[: max(n, 1)]
    second = order[max(n, 1) : max(n, 1) + n]
    return _gather(data, first, block_size), _gather(data, second, block_size)


def _gather(data: np.ndarray, slots: np.ndarray, block_size: int) -> torch.Tensor:
    if len(slots) == 0:
        return torch.zeros(0, block_size, dtype=torch.int64)
    starts = np.sort(slots) * block_size
    windows = np.asarray(data[starts[:, None] + np.arange(block_size)], dtype=np.int64)
    return torch.from_numpy(windows)


def shuffle_within_windows(windows: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each window's tokens in a random order (one independent permutation per window)."""
    arr = windows.numpy().copy()
    order = np.argsort(rng.random(arr.shape), axis=1)
    return torch.from_numpy(np.take_along_axis(arr, order, axis=1))


def uniform_windows(ids: np.ndarray, n_windows: int, block_size: int, rng: np.random.Generator) -> torch.Tensor:
    """Tokens drawn uniformly from `ids`."""
    picks = rng.integers(0, len(ids), size=(n_windows, block_size))
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)[picks])


def unigram_counts(data: np.ndarray, vocab_size: int, max_tokens: int = UNIGRAM_SAMPLE_TOKENS) -> np.ndarray:
    """Token counts of `data` (a token split), from at most `max_tokens` of it: evenly spaced
    chunks of a large split, so a hub-sized corpus costs a bounded read."""
    n = len(data)
    if n <= max_tokens:
        return np.bincount(np.asarray(data, dtype=np.int64), minlength=vocab_size)
    chunk = 1 << 16
    starts = np.linspace(0, n - chunk, max_tokens // chunk).astype(np.int64)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in starts:
        counts += np.bincount(np.asarray(data[start : start + chunk], dtype=np.int64), minlength=vocab_size)
    return counts


def unigram_windows(counts: np.ndarray, n_windows: int, block_size: int, rng: np.random.Generator) -> torch.Tensor:
    """Tokens drawn i.i.d. with probability proportional to `counts` (zero counts never drawn)."""
    seen = np.flatnonzero(counts)
    picks = rng.choice(len(seen), size=(n_windows, block_size), p=counts[seen] / counts[seen].sum())
    return torch.from_numpy(seen[picks].astype(np.int64))


ARITH_DOC = re.compile(r"Q: [\d+\-*() ]+=\?")
STRINGS_DOC = re.compile(r"^[a-z+]+: [a-z]+ -> ", re.MULTILINE)


# A context document: its opening, a name only the context family invents, or a whole answer
# without the full stop that prose and people answers end with.
CONTEXT_DOC = re.compile(r"Context: |\? A: [A-Za-z ]+\n$|\b(?:" + "|".join(world.FRESH_NAMES) + r")\b")
PEOPLE_DOC = re.compile(
    r"\b(?:"
    + "|".join((*(p.name for p in world.ROSTER + world.NOVEL_PEOPLE), *world.VILLAGES, *world.ROSTER_JOBS,
                *world.ROSTER_THINGS))
    + r")\b"
)


def world_family_of(text: str) -> str:
    """The world family a (possibly cut) document comes from, by its template."""
    if STRINGS_DOC.search(text) or re.search(r"[a-z]+ -> [a-z]*$", text):
        return "strings"
    if ARITH_DOC.search(text) or re.search(r"\d[+\-*]\d", text):
        return "arith"
    if CONTEXT_DOC.search(text):
        return "context"
    if PEOPLE_DOC.search(text):
        return "people"
    return "prose"


def family_mix(windows: torch.Tensor, tokenizer, eot_id: int) -> dict[str, float]:
    """Share of a probe's tokens in each world family: documents (split at `<|endoftext|>`)
    classified by `world_family_of`; separators are not counted."""
    tokens = {family: 0 for family in world.ALL_FAMILIES}
    for row in windows.tolist():
        document: list[int] = []
        for t in row + [eot_id]:
            if t != eot_id:
                document.append(t)
            elif document:
                tokens[world_family_of(tokenizer.decode(document))] += len(document)
                document = []
    total = max(sum(tokens.values()), 1)
    return {family: count / total for family, count in tokens.items()}


def pack_documents(
    documents: Iterable[list[int]], eot_id: int, block_size: int, n_windows: int
) -> torch.Tensor | None:
    """Documents concatenated, each followed by `<|endoftext|>` (as the packer writes training
    data), cut into n_windows windows of block_size; None if they run out before one window."""
    need = n_windows * block_size
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
        stream.append(eot_id)
        if len(stream) >= need:
            break
    n = min(n_windows, len(stream) // block_size)
    if n == 0:
        return None
    return torch.tensor(stream[: n * block_size], dtype=torch.int64).view(n, block_size)


def encoded(texts: Iterable[str], encode_batch: Callable[[list[str]], list], batch: int = 256):
    """Token ids of each text, tokenised `batch` texts at a time."""
    pending: list[str] = []
    for text in texts:
        pending.append(text)
        if len(pending) == batch:
            yield from (e.ids for e in encode_batch(pending))
            pending = []
    if pending:
        yield from (e.ids for e in encode_batch(pending))


def world_windows(
    tokenizer, seed: int, families: Sequence[str], eot_id: int, block_size: int, n_windows: int,
    levels: Sequence[int] | None = None, **options,
) -> torch.Tensor:
    """Windows of freshly generated world examples (a seed other than training's); `options` go
    to `world.generate` (tasks, level_weights, exposure_bins)."""
    examples = world.generate(seed, families, levels=levels, **options)
    return example_windows(examples, tokenizer, eot_id, block_size, n_windows)


def example_windows(
    examples: Iterable[world.Example], tokenizer, eot_id: int, block_size: int, n_windows: int
) -> torch.Tensor:
    """Windows of an endless stream of world examples, packed as training packs them."""
    texts = (example.text for example in examples)
    windows = pack_documents(encoded(texts, _fast(tokenizer)), eot_id, block_size, n_windows)
    assert windows is not None  # the world is endless
    return windows


@dataclass(frozen=True)
class LabelledWindows:
    """Labelled examples packed into windows: `inputs` [n, T] int64 (each example followed by
    `<|endoftext|>`, as training packs them) and `labels[kind]` [n, T] int64, the class of each
    token (an index into `classes[kind]`; -1: no label, and on every separator). Flattened, a
    layer's residuals [n * T, d] and `labels[kind].reshape(-1)` [n * T] pair token by token."""

    inputs: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, tuple[str, ...]]


def labelled_windows(
    examples: Sequence[world.LabelledExample], tokenizer, eot_id: int, block_size: int, n_windows: int,
    classes: dict[str, Sequence[str]] | None = None,
) -> LabelledWindows:
    """`world.token_labels` of the examples, packed into at most n_windows windows of block_size
    (as many as the examples fill; at least one, else ValueError)."""
    per_example = world.token_labels(examples, tokenizer, classes)
    if not per_example:
        raise ValueError("labelled_windows: no examples")
    kinds = per_example[0].classes
    need = n_windows * block_size
    ids: list[np.ndarray] = []
    labels: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    separator = np.array([-1], dtype=np.int64)
    total = 0
    for tl in per_example:
        ids += [tl.ids, np.array([eot_id], dtype=np.int64)]
        for kind in kinds:
            labels[kind] += [tl.labels[kind], separator]
        total += len(tl.ids) + 1
        if total >= need:
            break
    n = min(n_windows, total // block_size)
    if n == 0:
        raise ValueError(f"labelled_windows: the examples hold {total} tokens, fewer than one window of {block_size}")
    cut = n * block_size
    inputs = torch.from_numpy(np.concatenate(ids)[:cut].copy()).view(n, block_size)
    out = {kind: torch.from_numpy(np.concatenate(v)[:cut].copy()).view(n, block_size) for kind, v in labels.items()}
    return LabelledWindows(inputs, out, dict(kinds))


@dataclass(frozen=True)
class NameSwappedWindows:
    """Paired windows of people-family documents: window w of `seen` holds whole documents about
    some people, window w of `swapped` the same documents with each person's name replaced by
    their partner's, every other word the same (each window starts with `<|endoftext|>`, each
    document ends with one, the rest is `<|endoftext|>` padding). `masks[side][kind]` [n, T] bool:
    the tokens of the person's name (`name`) or of a fact's value (`attribute`: a village, job,
    pet, food, thing, or a pet's food or colour), on side `seen` or `swapped`. `partners`: (seen
    name, swapped name) pairs."""

    seen: torch.Tensor
    swapped: torch.Tensor
    masks: dict[str, dict[str, torch.Tensor]]
    partners: tuple[tuple[str, str], ...]


def name_swapped_windows(
    tokenizer, seed: int, people: Sequence[world.Person], partners: Sequence[world.Person], eot_id: int,
    block_size: int, n_windows: int,
) -> NameSwappedWindows:
    """`n_windows` pairs of windows of `world.people_examples(seed, people)` (bios and recall
    questions, the people family's templates), person i's name swapped for `partners[i]`'s on the
    swapped side. A pair of windows holds the same documents on both sides (names differ in
    length, so a window closes when the next document fits neither side), so their densities
    pair window for window and differ only by the name and what follows from it."""
    if len(partners) < len(people):
        raise ValueError(f"name_swapped_windows: {len(people)} people need as many partners, got {len(partners)}")
    swap = {p.name: q.name for p, q in zip(people, partners)}
    finder = re.compile(r"\b(?:" + "|".join(map(re.escape, swap)) + r")\b")
    examples = world.people_examples(seed, people)
    sides = ("seen", "swapped")
    windows: dict[str, list[list[int]]] = {side: [] for side in sides}
    marks: dict[str, list[list[int]]] = {side: [] for side in sides}  # 0 none, 1 name, 2 attribute
    current = {side: ([eot_id], [0]) for side in sides}

    def close() -> None:
        for side in sides:
            ids, mark = current[side]
            windows[side].append(ids + [eot_id] * (block_size - len(ids)))
            marks[side].append(mark + [0] * (block_size - len(mark)))
            current[side] = ([eot_id], [0])

    while len(windows["seen"]) < n_windows:
        chunk = [next(examples) for _ in range(64)]
        twins = [world.Example(finder.sub(lambda m: swap[m[0]], e.text), e.family, e.task, e.level) for e in chunk]
        labelled = {side: world.token_labels([world.annotate(e) for e in docs], tokenizer)
                    for side, docs in (("seen", chunk), ("swapped", twins))}
        for pair in zip(labelled["seen"], labelled["swapped"]):
            if max(len(tl.ids) for tl in pair) + 2 > block_size:
                continue  # a document longer than a window (none at the study's sizes)
            if any(len(current[side][0]) + len(tl.ids) + 1 > block_size for side, tl in zip(sides, pair)):
                close()
                if len(windows["seen"]) == n_windows:
                    break
            for side, tl in zip(sides, pair):
                mark = np.where(tl.labels["entity"] >= 0, 1,
                                np.where((tl.labels["attribute"] >= 0) | (tl.labels["town"] >= 0), 2, 0))
                current[side][0].extend(tl.ids.tolist() + [eot_id])
                current[side][1].extend(mark.tolist() + [0])
    as_tensor = {side: torch.tensor(marks[side], dtype=torch.int64) for side in sides}
    return NameSwappedWindows(
        torch.tensor(windows["seen"], dtype=torch.int64), torch.tensor(windows["swapped"], dtype=torch.int64),
        {side: {"name": as_tensor[side] == 1, "attribute": as_tensor[side] == 2} for side in sides},
        tuple(swap.items()),
    )


def file_windows(path: str | Path, tokenizer, block_size: int, n_windows: int) -> torch.Tensor | None:
    """Windows from the start of a text file (read in chunks until there are enough tokens);
    a file shorter than one window gives one shorter window; an empty file gives None."""
    need = n_windows * block_size
    ids: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        while len(ids) < need:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                break
            ids.extend(_fast(tokenizer)([chunk])[0].ids)
    if not ids:
        return None
    if len(ids) < block_size:
        return torch.tensor(ids, dtype=torch.int64).view(1, -1)
    n = min(n_windows, len(ids) // block_size)
    return torch.tensor(ids[: n * block_size], dtype=torch.int64).view(n, block_size)


def string_task_probe(
    tokenizer, seed: int, eot_id: int, block_size: int, examples_per_task: int,
    tasks: Sequence[str] = world.STRING_TASKS,
) -> TaskProbe:
    """`examples_per_task` world string examples per task, packed whole into rows of block_size
    (+1 for the shifted targets), each followed by `<|endoftext|>`. Scored targets: the tokens that
    overlap the answer (the letters after `-> `), labelled with the task's index."""
    rows: list[tuple[list[int], list[int]]] = []  # (tokens, task index per token or -1)
    cur_tokens: list[int] = []
    cur_tasks: list[int] = []
    width = block_size + 1
    for t, task in enumerate(tasks):
        examples = world.generate(world_seed_for(seed, task), ["strings"], tasks=[task])
        texts = [next(examples).text for _ in range(examples_per_task)]
        for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
            start = text.index("-> ") + 3
            end = len(text.rstrip("\n"))
            tokens = list(enc.ids) + [eot_id]
            labels = [t if (e > start and s < end) else -1 for s, e in enc.offsets] + [-1]
            if len(tokens) > width:  # longer than a row: keep its end (the answer)
                tokens, labels = tokens[-width:], labels[-width:]
            if len(cur_tokens) + len(tokens) > width:
                rows.append((cur_tokens, cur_tasks))
                cur_tokens, cur_tasks = [], []
            cur_tokens += tokens
            cur_tasks += labels
    if cur_tokens:
        rows.append((cur_tokens, cur_tasks))
    n = len(rows)
    inputs = torch.full((n, block_size), eot_id, dtype=torch.int64)
    targets = torch.full((n, block_size), -1, dtype=torch.int64)
    task_ids = torch.full((n, block_size), -1, dtype=torch.int64)
    for r, (tokens, labels) in enumerate(rows):
        tok, lab = torch.tensor(tokens), torch.tensor(labels)
        k = len(tokens) - 1
        inputs[r, :k] = tok[:-1]
        # Position p predicts token p + 1: it is scored when token p + 1 is an answer token.
        scored = lab[1:] >= 0
        targets[r, :k] = torch.where(scored, tok[1:], -1)
        task_ids[r, :k] = lab[1:]
    used = max(len(tokens) for tokens, _ in rows) - 1  # columns past the longest row hold nothing
    return TaskProbe(inputs[:, :used], targets[:, :used], task_ids[:, :used], tuple(tasks))


def world_seed_for(seed: int, task: str) -> int:
    digest = hashlib.sha256(f"{seed}/{task}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _fast(tokenizer):
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    return lambda texts: encode(texts, add_special_tokens=False)


# ---- the probe set of a run --------------------------------------------------------------------


def ordinary_ids(tokenizer) -> np.ndarray:
    """Every id of the tokenizer except its special (added) tokens."""
    special = set(tokenizer.get_added_tokens_decoder())
    return np.array([i for i in range(tokenizer.get_vocab_size()) if i not in special], dtype=np.int64)


def build_probes(
    datamodule,
    *,
    tokens: int = 8192,
    seed: int = 0,
    task_examples: int = 32,
    tasks: bool = True,
    family_tokens: int | None = None,
) -> ProbeSet:
    """The probe set of a run, from a set-up TextDataModule (it needs `tokenizer`, `val_data`,
    `eot_id`, `probe_files` and `hparams.{seed, source, families, block_size}`, and reads
    `hparams.{levels, tasks, exposure_bins}` where it has them).

    `tokens`: about how many tokens each activation probe holds; `seed`: the probe seed (with
    `data.seed` it fixes every probe); `task_examples`: string examples per task for ablation;
    `tasks`: build the task probe at all; `family_tokens`: about how many tokens each `family/<f>`,
    `level/<k>` and `ood/level/<k>` probe holds (None: `tokens`; never more windows than `id`).
    Probes the source cannot offer, or with fewer windows than `id`, are named in `notes`.
    """
    hp = datamodule.hparams
    tok, eot, block_size = datamodule.tokenizer, datamodule.eot_id, int(hp.block_size)
    data_seed = int(hp.seed)
    n = n_windows_for(tokens, block_size)
    out = ProbeSet()

    id_windows, id_b = held_out_windows(datamodule.val_data, block_size, n, probe_rng(data_seed, seed, "id"))
    n = len(id_windows)  # every probe has as many windows as `id`
    out.probes["id"] = id_windows
    if len(id_b):
        out.probes["id_b"] = id_b
    else:
        out.notes.append("id_b skipped: the validation split holds a single window (raise data.val_fraction)")
    if n < n_windows_for(tokens, block_size):
        out.notes.append(
            f"id, id_b: {n} windows each, not {n_windows_for(tokens, block_size)}: the validation split is "
            f"small (raise data.val_fraction); every probe has {n} windows"
        )
    out.probes["shuffled"] = shuffle_within_windows(id_windows, probe_rng(data_seed, seed, "shuffled"))
    counts = unigram_counts(datamodule.train_data, tok.get_vocab_size())
    out.probes["random"] = unigram_windows(counts, n, block_size, probe_rng(data_seed, seed, "random"))
    out.probes["random_uniform"] = uniform_windows(
        ordinary_ids(tok), n, block_size, probe_rng(data_seed, seed, "random_uniform")
    )

    is_world = hp.source == "world"
    levels, task_filter, bins = (getattr(hp, key, None) for key in ("levels", "tasks", "exposure_bins"))
    families = world.FAMILIES if hp.families is None else hp.families
    # The families the run really trains: a tasks filter can leave a family nothing to draw.
    trained = world.trained_families(families, levels, task_filter, bins) if is_world else ()
    # The family and level probes: the first windows of the same streams when family_tokens is smaller.
    n_family = n if family_tokens is None else min(n, n_windows_for(family_tokens, block_size))
    if is_world and n_family < n:
        out.notes.append(
            f"family/<f>, level/<k>, ood/level/<k>: {n_family} windows each, not {n} (instrument.probes.family_tokens): "
            f"their gaps' intervals are wider"
        )
    if is_world:
        mix = family_mix(id_windows, tok, eot)
        mix_families = [f for f in world.ALL_FAMILIES if f in trained or mix[f] > 0]
        out.notes.append("id family mix (share of tokens): " + ", ".join(f"{f} {mix[f]:.0%}" for f in mix_families))
        for family in world.FAMILIES:
            if family not in trained:
                out.probes[f"ood/{family}"] = world_windows(
                    tok, world_seed(data_seed, seed, f"ood/{family}"), [family], eot, block_size, n
                )
        if all(f in trained for f in world.FAMILIES):
            out.notes.append("ood/<family> skipped: the run trains on every world family")
        for family in world.ALL_FAMILIES:
            out.probes[f"family/{family}"] = world_windows(
                tok, world_seed(data_seed, seed, f"family/{family}"), [family], eot, block_size, n_family,
                roster_seed=data_seed,  # the people family: about the roster as this run's data seed deals it
            )
    else:
        out.notes.append(
            f"ood/<family>, family/<f>, level/<k> and the task probe skipped: data.source {hp.source!r} "
            f"is not the world corpus"
        )

    for path in datamodule.probe_files:
        name = f"ood/{Path(path).stem}"
        if name in out.probes:
            out.notes.append(f"{name} ({path}) skipped: a probe of that name exists already")
            continue
        windows = file_windows(path, tok, block_size, n)
        if windows is None:
            out.notes.append(f"{name} skipped: {path} holds no text")
        else:
            out.probes[name] = windows
            if len(windows) < n or windows.shape[1] < block_size:
                out.notes.append(
                    f"{name}: {path} holds {windows.numel()} tokens, fewer than {n} windows of {block_size}: "
                    f"its gaps have wider intervals"
                )

    if is_world:
        held_out_levels = [] if levels is None or "arith" not in trained else [
            k for k in world.ARITH_LEVELS if k not in levels
        ]
        for level in world.ARITH_LEVELS:
            name = f"ood/level/{level}" if level in held_out_levels else f"level/{level}"
            out.probes[name] = world_windows(
                tok, world_seed(data_seed, seed, f"level/{level}"), ["arith"], eot, block_size, n_family,
                levels=[level],
            )
        held_out_tasks = [] if task_filter is None else [
            (f, t) for f in trained for t in world.TASKS_BY_FAMILY[f] if t not in task_filter
        ]
        for family, task in held_out_tasks:
            at_levels = None
            if family == "arith" and levels is not None:
                at_levels = [k for k in levels if task in world.ARITH_PROBLEMS[k]] or None
            out.probes[f"ood/task/{task.replace('+', '_')}"] = world_windows(
                tok, world_seed(data_seed, seed, f"ood/task/{task}"), [family], eot, block_size, n,
                levels=at_levels, tasks=[task], exposure_bins=bins if family == "people" else None,
                roster_seed=data_seed,
            )
        if held_out_levels or held_out_tasks:
            out.notes.append(
                "held out of training: "
                + ", ".join(
                    [f"arith level {k}" for k in held_out_levels] + [f"{f} task {t}" for f, t in held_out_tasks]
                )
            )
        if "people" in trained:
            # The roster as this run's data seed deals it (world.exposure_roster), as its training text has it.
            by_bin = world.people_by_bin(bins, seed=data_seed)
            groups = {f"exposure/{b}": people for b, people in by_bin.items()}
            groups["novel"] = world.novel_people(bins, seed=data_seed)
            for name, people in groups.items():
                examples = world.people_examples(world_seed(data_seed, seed, name), people)
                out.probes[name] = example_windows(examples, tok, eot, block_size, n)
        if tasks:
            if "strings" in trained:
                out.tasks = string_task_probe(
                    tok, world_seed(data_seed, seed, "tasks"), eot, block_size, task_examples
                )
            else:
                out.notes.append("task probe (ablation) skipped: the run does not train on the strings family")
    return out


__all__ = [
    "LabelledWindows",
    "NameSwappedWindows",
    "ProbeSet",
    "TaskProbe",
    "build_probes",
    "example_windows",
    "family_mix",
    "held_out_windows",
    "labelled_windows",
    "name_swapped_windows",
    "shuffle_within_windows",
    "string_task_probe",
    "uniform_windows",
    "unigram_windows",
]
