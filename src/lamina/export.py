"""`lamina export CKPT --out DIR`: a lamina checkpoint as a Hugging Face `GPT2LMHeadModel` folder.

The folder (config.json, model.safetensors, and the run's tokenizer as a `PreTrainedTokenizerFast`)
loads with `transformers.AutoModelForCausalLM.from_pretrained(DIR)`, so TransformerLens, nnsight and
lm-evaluation-harness can read a lamina run. GPT-2's block is lamina's for `gelu` models with
learned positions: the same pre-norm order, fused qkv projection, tied embeddings and 1e-5 layer
norm. What differs is mapped exactly: GPT-2's Conv1D stores weights transposed, it always has
biases (zeros where lamina has none), and its "gelu" must be the exact erf GELU (not "gelu_new").
Other shapes (gated or other activations, rotary positions) are refused with one line.
`transformers` is an optional extra (`pip install -e .[export]`), never a core dependency.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lamina.data.tokenizer import EOT
from lamina.errors import ArgumentParser, ConfigError
from lamina.pretrained import LoadedCheckpoint, load_gpt

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which lamina's blocks use


def check_exportable(loaded: LoadedCheckpoint) -> None:
    config = loaded.model.config
    if config.activation != "gelu":
        raise ConfigError(
            f"model.activation: export to GPT2LMHeadModel needs gelu, the checkpoint {loaded.path!r} has "
            f"{config.activation!r}"
        )
    if config.rotary:
        raise ConfigError(
            f"model.rotary: export to GPT2LMHeadModel needs learned positions, the checkpoint {loaded.path!r} "
            f"uses rotary ones"
        )

    def setting(key: str, default):  # the checkpoint's hyperparameters say, where the config may not know the key
        return loaded.hparams.get(key, getattr(config, key, default))

    # GPT-2's attention has no norm on queries and keys, and its logits no cap: refused. An untied
    # output layer GPT-2 can hold (tie_word_embeddings false), but gpt2_config writes a tied one.
    if setting("qk_norm", False):
        raise ConfigError(
            f"model.qk_norm: export to GPT2LMHeadModel needs attention without a query/key norm, the checkpoint "
            f"{loaded.path!r} normalises them"
        )
    if setting("logit_softcap", None) is not None:
        raise ConfigError(
            f"model.logit_softcap: export to GPT2LMHeadModel needs uncapped logits, the checkpoint {loaded.path!r} "
            f"caps them at {setting('logit_softcap', None)}"
        )
    if not setting("tie_embeddings", True):
        raise ConfigError(
            f"model.tie_embeddings: export to GPT2LMHeadModel writes a tied output layer, the checkpoint "
            f"{loaded.path!r} has an untied one"
        )


def gpt2_config(loaded: LoadedCheckpoint, eot_id: int):
    from transformers import GPT2Config

    c = loaded.model.config
    return GPT2Config(
        vocab_size=c.padded_vocab_size,  # lamina's logits run over the padded vocabulary too
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.d_ff,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=LAYER_NORM_EPS,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )


def gpt2_state_dict(loaded: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """lamina's weights under GPT-2's names and layouts."""
    own = loaded.model.state_dict()
    out = {
        "transformer.wte.weight": own["transformer.wte.weight"],
        "transformer.wpe.weight": own["transformer.wpe.weight"],
        "lm_head.weight": own["lm_head.weight"],
    }
    norms = [f"transformer.h.{i}.{n}" for i in range(loaded.model.config.n_layer) for n in ("ln_1", "ln_2")]
    for norm in [*norms, "transformer.ln_f"]:
        out[f"{norm}.weight"] = own[f"{norm}.weight"]
        out[f"{norm}.bias"] = own.get(f"{norm}.bias", torch.zeros_like(own[f"{norm}.weight"]))
    for i in range(loaded.model.config.n_layer):
        for linear in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            name = f"transformer.h.{i}.{linear}"
            weight = own[f"{name}.weight"]  # nn.Linear: [out, in]; GPT-2's Conv1D: [in, out]
            out[f"{name}.weight"] = weight.t().contiguous()
            out[f"{name}.bias"] = own.get(f"{name}.bias", torch.zeros(weight.size(0), dtype=weight.dtype))
    return out


def export(checkpoint: str, out: str | Path) -> Path:
    """Write the GPT2LMHeadModel folder for `checkpoint` into `out`; returns `out`."""
    try:
        from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == "transformers":
            raise ConfigError("export: needs the optional package transformers (pip install -e '.[export]')") from err
        # transformers is there but something it imports failed: say what, not "install it"
        raise ConfigError(f"export: transformers is installed but does not import: {err}") from err
    loaded = load_gpt(checkpoint, key="export CKPT")
    check_exportable(loaded)
    eot_id = loaded.tokenizer.token_to_id(EOT)
    model = GPT2LMHeadModel(gpt2_config(loaded, eot_id))
    missing, unexpected = model.load_state_dict(gpt2_state_dict(loaded), strict=False)
    # GPT-2 keeps a causal-mask buffer in some versions; every parameter must come from lamina.
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"export: GPT-2 names out of step with lamina's: missing {missing}, unexpected {unexpected}")
    out = Path(out)
    model.save_pretrained(out)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=loaded.tokenizer, eos_token=EOT, bos_token=EOT)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="lamina export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a lamina checkpoint (runs/<name>/version_<n>/checkpoints/last.ckpt)")
    parser.add_argument("--out", required=True, help="the folder to write (config.json, model.safetensors, tokenizer)")
    args = parser.parse_args(argv)
    print(f"lamina: exported {args.checkpoint} to {export(args.checkpoint, args.out)} (GPT2LMHeadModel)")
