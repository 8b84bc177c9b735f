"""`lamina export` (a GPT2LMHeadModel folder that transformers loads with lamina's logits) and
`lamina sample` (greedy decoding is the model's argmax chain)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lamina.cli import main
from lamina.data.tokenizer import byte_tokenizer, save_tokenizer
from lamina.export import export
from lamina.model import GPT, GPTConfig
from lamina.sample import sample


def write_checkpoint(folder, **shape) -> tuple[str, GPT]:
    """A lamina run folder by hand: checkpoints/last.ckpt (what the loaders read) and tokenizer.json."""
    config = GPTConfig(vocab_size=259, block_size=24, n_layer=2, n_head=2, n_embd=16, **shape)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():  # biases and norms away from their init, so a mapping slip shows
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    (folder / "checkpoints").mkdir(parents=True)
    hparams = {k: getattr(config, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                                                 "activation", "mlp_ratio", "bias", "rotary")}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = folder / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams,
                "datamodule_hyper_parameters": {"tokenizer": "byte"}}, path)
    save_tokenizer(byte_tokenizer(), folder / "tokenizer.json")
    return str(path), model.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_export_loads_in_transformers_with_lamina_logits(tmp_path, bias):
    checkpoint, model = write_checkpoint(tmp_path / "run", bias=bias)
    out = export(checkpoint, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer.encode("Mira lives in Dun.<|endoftext|>")])
    assert ids[0, -1].item() == byte_tokenizer().token_to_id("<|endoftext|>")  # special tokens travel
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(ids).logits
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max().item() < 1e-4


@pytest.mark.parametrize("shape, key", [(dict(activation="swiglu"), "model.activation"),
                                        (dict(rotary=True), "model.rotary")])
def test_export_refuses_other_shapes_with_one_line(tmp_path, capsys, shape, key):
    checkpoint, _ = write_checkpoint(tmp_path / "run", **shape)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", checkpoint, "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(f"lamina: error: {key}: ") and "\n" not in err
    assert not (tmp_path / "hf").exists()


def test_greedy_sample_is_the_argmax_chain(tmp_path):
    checkpoint, model = write_checkpoint(tmp_path / "run")
    tokenizer = byte_tokenizer()
    prompt = "Q: 3+4"
    ids = tokenizer.encode(prompt).ids
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1, :259].argmax()))
    expected = tokenizer.decode(ids[len(tokenizer.encode(prompt).ids):], skip_special_tokens=False)
    got = sample(checkpoint, prompt, max_new_tokens=5, temperature=0)
    eot = "<|endoftext|>"
    assert got == [expected.split(eot)[0]]
    a, b = (sample(checkpoint, prompt, max_new_tokens=5, num_samples=3, seed=s) for s in (1, 1))
    assert a == b and len(a) == 3  # seeded


def test_sample_refuses_a_prompt_longer_than_the_context(tmp_path, capsys):
    checkpoint, _ = write_checkpoint(tmp_path / "run")
    with pytest.raises(SystemExit):
        main(["sample", checkpoint, "--prompt", "x" * 40])
    assert capsys.readouterr().err.startswith("lamina: error: --prompt: expected 1 to 23 tokens")


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_with_repo_root_first(code: str, *, site: bool = True) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose sys.path starts with the repository root (as under
    `python -m pytest`, `python -c` or a notebook in the checkout); without site-packages if not `site`."""
    prelude = f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
    if not site:
        prelude += "sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO_ROOT)


def test_repo_root_kernels_folder_does_not_shadow_transformers_kernels():
    # transformers imports the Hugging Face package `kernels`; the repository's kernels/ (lamina.kernels)
    # must not be what it gets, wherever the repository root sits on sys.path.
    done = run_with_repo_root_first(
        "import kernels, lamina.kernels\n"
        "from transformers import GPT2LMHeadModel\n"
        "assert kernels is not lamina.kernels\n"
        f"assert not kernels.__file__.startswith({str(REPO_ROOT / 'kernels')!r}), kernels.__file__\n"
        "print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_repo_root_kernels_folder_is_not_a_top_level_package():
    # With no other `kernels` installed, `import kernels` fails as if the folder were not there.
    done = run_with_repo_root_first("import kernels", site=False)
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'kernels'" in done.stderr and "is lamina.kernels" in done.stderr


def test_outside_clients_script_runs_as_a_user_runs_it(tmp_path):
    # `python bench/outside_clients.py` puts bench/ first on sys.path: nothing there may shadow a package
    # transformers imports. transformers is a test dependency; nnsight and TransformerLens may be absent.
    out = tmp_path / "clients.json"
    done = subprocess.run([sys.executable, "bench/outside_clients.py", "--demo", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    assert report["ok"] and len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["clients"]["transformers"]["max_abs_logit_diff"] < 1e-4
