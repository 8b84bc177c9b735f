"""What the claims that decode from checkpoints share: the world arithmetic problems a run's text
holds (to leave them out), held-out problems of a level, the device, and the keys of their caches."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from lamina.data import world
from lamina.finetune.retention import EvalItem


def training_questions(data: dict) -> set[str]:
    """The arithmetic questions (`Q: 47+38=?`) of a world corpus as a data module's hparams describe it
    (the same generator, seed and filters, up to max_bytes and a little beyond: it errs on the side of
    leaving a problem out)."""
    families = data.get("families") or list(world.FAMILIES)
    examples = world.generate(int(data["seed"]), families, levels=data.get("levels"), tasks=data.get("tasks"),
                              level_weights=data.get("level_weights", "by_kind"),
                              family_weights=data.get("family_weights"))
    budget = int(1.05 * int(data.get("max_bytes") or 0)) + 4096
    seen, taken = set(), 0
    while taken < budget:
        example = next(examples)
        taken += len(example.text.encode("utf-8")) + 1
        if example.family == "arith":
            seen.add(example.text.split(f" {world.THINK_OPEN}", 1)[0])
    return seen


def arith_items(seed: int, level: int, n: int, exclude: set[str]) -> tuple[list[EvalItem], dict]:
    """Up to n distinct problems of `level` that are not in `exclude` (held out of the fine-tuning
    text), drawn from a world stream of `seed`, as think-form items (prompt `Q: 47+38=? <think>`,
    correct when `A: 85` follows `</think>`). A level whose every problem occurs in `exclude` (level
    1 has 100 problems in all) has none held out: then its problems are taken as they are, and the
    returned facts say so (`held_out` false)."""
    held: dict[str, EvalItem] = {}
    seen: dict[str, EvalItem] = {}
    examples = world.generate(seed, ["arith"], levels=[level])
    for _ in range(200 * max(n, 1)):
        if len(held) >= n:
            break
        text = next(examples).text
        question, rest = text.split(f" {world.THINK_OPEN}", 1)
        answer = rest.rsplit("A: ", 1)[1].strip()
        item = EvalItem(f"{question} {world.THINK_OPEN}", answer, "think", rest)
        (seen if question in exclude else held).setdefault(question, item)
    drawn = len(held) + len(seen)
    if held:
        return list(held.values())[:n], {"items": min(n, len(held)), "drawn": drawn, "held_out": True}
    return list(seen.values())[:n], {"items": min(n, len(seen)), "drawn": drawn, "held_out": False}


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_json(path: Path, key: str, field: str, compute: Callable[[], object]):
    """`compute()`, kept in the JSON file `path` as {"key": key, field: value} and read back while
    the key is the same (a fingerprint of the checkpoints and settings it was made from). The file
    is replaced whole (a killed study leaves the old one or none)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved[field]
    except (OSError, json.JSONDecodeError, KeyError):
        pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, field: value}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return value


def checkpoint_key(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, int(st.st_mtime_ns)]
