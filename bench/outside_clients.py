"""Does a `lamina export` folder read the same in the tools outside lamina? One checkpoint (or a
small random one with --demo) is exported, and each client that is installed loads the folder,
runs the same token ids and is compared with lamina's own model:

    python bench/outside_clients.py --demo                       # no training needed
    python bench/outside_clients.py runs/tiny/version_0/checkpoints/last.ckpt --demo

  transformers      AutoModelForCausalLM: logits (and the tokenizer's ids for the same text)
  nnsight           TransformersModel trace: logits and every layer's mlp.act output
  transformer_lens  TransformerBridge.boot_transformers (TransformerLens 4 removed
                    HookedTransformer): logits and every layer's blocks.{i}.mlp.hook_post

The MLP activation is lamina's `record["mlp"]` (the GELU output, the input of c_proj). A client
that is not installed is skipped, never a failure. Writes one JSON (versions, and per checkpoint
and client: loaded, max |logit diff|, max |activation diff|, notes) to --out, prints a table, and
exits 1 if an installed client fails to load or differs from lamina by more than --tolerance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

# The export is a local folder: no client should reach for the Hugging Face Hub (there may be no network).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lamina.data.tokenizer import byte_tokenizer, save_tokenizer  # noqa: E402
from lamina.errors import ConfigError  # noqa: E402
from lamina.model import GPT, GPTConfig  # noqa: E402
from lamina.pretrained import SHAPE_KEYS, load_gpt, read_checkpoint  # noqa: E402

DISTRIBUTIONS = {"transformer_lens": "transformer-lens"}  # import name -> pip name, where they differ
TEXT = "Mira lives in Dun. The ferry leaves at noon.<|endoftext|>"


def version(module: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return None


def write_demo_checkpoint(folder: Path, bias: bool) -> str:
    """A random lamina run folder as tests/test_export.py writes it: checkpoints/last.ckpt and
    tokenizer.json. Biases and norms moved off their init, so a mapping slip shows."""
    config = GPTConfig(vocab_size=259, block_size=24, n_layer=2, n_head=2, n_embd=16, bias=bias)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    (folder / "checkpoints").mkdir(parents=True)
    path = folder / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {k: getattr(config, k) for k in SHAPE_KEYS},
                "datamodule_hyper_parameters": {"tokenizer": "byte"}}, path)
    save_tokenizer(byte_tokenizer(), folder / "tokenizer.json")
    return str(path)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} against lamina's {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def check_transformers(folder: Path, ids: torch.Tensor, ref: dict) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(ids).logits
    # The tokenizer travels in the folder too: the same text must give lamina's ids.
    same_ids = AutoTokenizer.from_pretrained(folder).encode(ref["text"]) == ids[0].tolist()
    return {"max_abs_logit_diff": max_diff(logits, ref["logits"]),
            "notes": f"{type(model).__name__}; AutoTokenizer gives lamina's ids: {same_ids}",
            "failed": not same_ids}


def check_nnsight(folder: Path, ids: torch.Tensor, ref: dict) -> dict:
    import nnsight
    from nnsight import TransformersModel  # 0.8: LanguageModel is a deprecated alias of this

    lm = TransformersModel(str(folder), task="text-generation", dispatch=True)
    acts = []  # appended to inside the trace: a list comprehension there left it unbound (nnsight 0.8.1)
    with lm.trace(ids):
        # Read in execution order (layer by layer, then the output), as nnsight's tracer expects.
        for i in range(len(ref["mlp"])):
            acts.append(nnsight.save(lm.transformer.h[i].mlp.act.output))
        logits = nnsight.save(lm.output.logits)
    return {"max_abs_logit_diff": max_diff(logits, ref["logits"]),
            "max_abs_activation_diff": max(max_diff(a, b) for a, b in zip(acts, ref["mlp"])),
            "activation": "transformer.h[i].mlp.act.output, every layer",
            "notes": "nnsight.TransformersModel(folder, task='text-generation', dispatch=True)"}


def check_transformer_lens(folder: Path, ids: torch.Tensor, ref: dict) -> dict:
    from transformer_lens import TransformerBridge

    # Raw HF weights (no compatibility mode: its LayerNorm folding and unembedding centring
    # shift logits by design). The bridge forces eager attention; lamina uses SDPA.
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids)
    acts = [cache[f"blocks.{i}.mlp.hook_post"] for i in range(len(ref["mlp"]))]
    found = {"max_abs_logit_diff": max_diff(logits, ref["logits"]),
             "max_abs_activation_diff": max(max_diff(a, b) for a, b in zip(acts, ref["mlp"])),
             "activation": "run_with_cache: blocks.{i}.mlp.hook_post, every layer"}
    # HookedTransformer users turn on compatibility mode: there only log-probabilities can match.
    bridge.enable_compatibility_mode()
    with torch.no_grad():
        logprobs = bridge(ids).log_softmax(-1)
    compat = max_diff(logprobs, ref["logits"].log_softmax(-1))
    notes = (f"TransformerBridge.boot_transformers(folder), eager attention; "
             f"compatibility mode: max |log-prob diff| {compat:.1e}")
    return {**found, "compat_mode_max_abs_logprob_diff": compat, "notes": notes}


CHECKS = {"transformers": check_transformers, "nnsight": check_nnsight, "transformer_lens": check_transformer_lens}
DIFFS = ("max_abs_logit_diff", "max_abs_activation_diff", "compat_mode_max_abs_logprob_diff")


def run_client(name: str, folder: Path, ids: torch.Tensor, ref: dict, tolerance: float) -> dict:
    """One client's verdict: skipped when not installed, failed when it errors or disagrees."""
    if importlib.util.find_spec(name) is None:
        return {"status": "not installed", "loaded": False}
    try:
        found = {"loaded": True, **CHECKS[name](folder, ids, ref)}
    except Exception as err:  # a client that cannot read the folder is a finding, not a crash
        return {"status": "failed", "loaded": False, "notes": f"{type(err).__name__}: {err}"}
    bad = found.pop("failed", False) or max(found.get(k, 0.0) for k in DIFFS) > tolerance
    return {"status": "failed" if bad else "ok", **found}


def lamina_reference(loaded, text: str) -> tuple[torch.Tensor, dict]:
    """Token ids for `text` (cut to the context) and lamina's own logits and MLP activations."""
    ids = torch.tensor([loaded.tokenizer.encode(text).ids[: loaded.model.config.block_size]])
    record: dict = {}
    with torch.no_grad():
        logits = loaded.model(ids, record=record)[0]
    text = loaded.tokenizer.decode(ids[0].tolist(), skip_special_tokens=False)
    return ids, {"text": text, "logits": logits, "mlp": record["mlp"]}


def check_checkpoint(checkpoint: str, label: str, tolerance: float) -> dict:
    loaded = load_gpt(checkpoint, key="checkpoint")
    result = {"checkpoint": label, "global_step": read_checkpoint(checkpoint, "checkpoint").get("global_step"),
              "model": {k: getattr(loaded.model.config, k) for k in SHAPE_KEYS}}
    ids, ref = lamina_reference(loaded, TEXT)
    result["tokens"] = ids.size(1)
    with tempfile.TemporaryDirectory() as tmp:
        from lamina.export import export  # imports transformers only when called

        try:
            folder = export(checkpoint, Path(tmp) / "hf")
        except ConfigError as err:  # rotary or gated models: the export refuses them
            return {**result, "export_error": str(err), "clients": {}}
        result["clients"] = {name: run_client(name, folder, ids, ref, tolerance) for name in CHECKS}
    return result


def print_table(runs: list[dict]) -> None:
    width = max(len("checkpoint"), *(len(run["checkpoint"]) for run in runs))
    print(f"{'checkpoint':<{width}} {'client':<17} {'status':<14} {'logit diff':>11} {'act diff':>11}")
    for run in runs:
        if "export_error" in run:
            print(f"{run['checkpoint']:<{width}} export failed: {run['export_error']}")
        for name, c in run["clients"].items():
            cells = [f"{c[k]:.2e}" if k in c else "-" for k in ("max_abs_logit_diff", "max_abs_activation_diff")]
            print(f"{run['checkpoint']:<{width}} {name:<17} {c['status']:<14} {cells[0]:>11} {cells[1]:>11}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="lamina checkpoints (runs/<name>/version_<n>/checkpoints/...)")
    parser.add_argument("--demo", action="store_true", help="also two small random lamina GPTs, written here")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |difference| that passes")
    parser.add_argument("--out", help="the JSON to write (default bench/results/outside-clients-<date>.json)")
    args = parser.parse_args()
    if not args.checkpoints and not args.demo:
        parser.error("give a checkpoint, or --demo")
    can_export = importlib.util.find_spec("transformers") is not None  # lamina.export writes with transformers
    if not can_export:
        print("transformers is not installed: nothing can export (pip install -e '.[export]'); every client skipped")
    date = dt.date.today().isoformat()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # The demo: both of lamina's bias settings (GPT-2 always has biases: zeros where lamina has none).
        todo = [(write_demo_checkpoint(Path(tmp) / f"demo-{b}", b), f"demo (random, bias={b})")
                for b in (False, True) if args.demo]
        todo += [(c, c) for c in args.checkpoints]
        for checkpoint, label in todo:
            if can_export:
                runs.append(check_checkpoint(checkpoint, label, args.tolerance))
            else:
                runs.append({"checkpoint": label, "clients": {n: {"status": "not installed"} for n in CHECKS}})
    ok = all("export_error" not in r and all(c["status"] != "failed" for c in r["clients"].values()) for r in runs)
    versions = {"python": platform.python_version(), **{m: version(m) for m in ("torch", "lamina", *CHECKS)}}
    result = {"date": date, "tolerance": args.tolerance, "ok": ok, "versions": versions, "runs": runs}
    out = Path(args.out or Path(__file__).parent / "results" / f"outside-clients-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(runs)
    print("versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()))
    print(f"wrote {out}: {'all installed clients agree' if ok else 'FAILED'} (tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
