"""`lamina sample CKPT --prompt TEXT`: what a model writes after a prompt, greedy or sampled.

    lamina sample runs/tiny/version_0/checkpoints/last.ckpt --prompt "Q: What is 12+7? A:" --greedy
    lamina sample CKPT --prompt "Mira lives in" --temperature 0.8 --num_samples 4 --seed 1

Decoding is GPT.generate (batched, KV-cached) and stops at `<|endoftext|>` or at the context length.
"""

from __future__ import annotations


import torch

from lamina.data.tokenizer import EOT
from lamina.errors import ArgumentParser, ConfigError
from lamina.pretrained import load_gpt


def sample(
    checkpoint: str, prompt: str, *, max_new_tokens: int = 200, temperature: float = 1.0, num_samples: int = 1,
    seed: int = 0,
) -> list[str]:
    """The continuations of `prompt` (text only, without the prompt or the end-of-text token)."""
    if not temperature >= 0:
        raise ConfigError(f"--temperature: expected a number >= 0 (0 is greedy), got {temperature}")
    if max_new_tokens < 1 or num_samples < 1:
        raise ConfigError(f"--max_new_tokens and --num_samples: expected integers >= 1, got {max_new_tokens}, {num_samples}")
    loaded = load_gpt(checkpoint, key="sample CKPT")
    ids = loaded.tokenizer.encode(prompt).ids
    block_size = loaded.model.config.block_size
    if not 1 <= len(ids) < block_size:
        raise ConfigError(
            f"--prompt: expected 1 to {block_size - 1} tokens (model.block_size is {block_size}), got {len(ids)}"
        )
    eot_id = loaded.tokenizer.token_to_id(EOT)
    generator = torch.Generator().manual_seed(seed)
    tokens, lengths = loaded.model.generate(
        torch.tensor([ids]), min(max_new_tokens, block_size - len(ids) + 1), temperature=temperature,
        stop_id=eot_id, num_samples=num_samples, generator=generator,
    )
    texts = []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        row = row[:n]
        texts.append(loaded.tokenizer.decode(row[:-1] if row and row[-1] == eot_id else row, skip_special_tokens=False))
    return texts


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="lamina sample", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a lamina checkpoint (runs/<name>/version_<n>/checkpoints/last.ckpt)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 or --greedy: the most likely token")
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    texts = sample(
        args.checkpoint, args.prompt, max_new_tokens=args.max_new_tokens,
        temperature=0.0 if args.greedy else args.temperature, num_samples=args.num_samples, seed=args.seed,
    )
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + text)
