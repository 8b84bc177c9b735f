"""The GPT: pre-norm transformer blocks, tied embeddings, GPT-2 init (after nanoGPT's model.py).

Options of a newer recipe (modded-nanogpt, nanochat), each off by default so that a config without
them builds today's model: `qk_norm` (queries and keys RMS-normalised per head, without a weight),
`tie_embeddings` false (an output layer of its own), `zero_init_projections` (the blocks' residual
projections start at zero: each block starts as the identity), `logit_softcap` (logits
cap * tanh(logits / cap)); rotary positions and relu2 are `rotary` and `activation`. The optimizers
(`model.optimizer`: AdamW, or Muon beside AdamW) are lamina.optim.

No framework inside: plain torch.nn. The one narrow interface the instrumentation reads is
`GPT.forward(idx, record=...)`: pass a dict and each block appends its MLP post-activation
(`record["mlp"]`, `[B, T, d_ff]` per layer), the pre-activation that decides whether a unit fires
(`record["mlp_pre"]`: the input of the activation, or for gated MLPs the gate's half, `[B, T, d_ff]`)
and its output residual stream (`record["resid"]`, `[B, T, n_embd]` per layer). With
`record=None`, the default, the training path carries no
hooks and no extra work.

Decoding: `GPT.forward(idx, kv_cache=KVCache(n_layer))` runs `idx` after the positions already in
the cache and appends its keys and values; `GPT.generate` samples (or picks greedily) many rows
together, one forward per new token. With `kv_cache=None` the training path is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lamina.errors import ConfigError

ACTIVATIONS = ("gelu", "relu", "relu2", "silu", "swiglu", "geglu")


@dataclass
class GPTConfig:
    vocab_size: int = 259
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    activation: str = "gelu"
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    bias: bool = False
    rotary: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = True
    zero_init_projections: bool = False
    logit_softcap: float | None = None

    def __post_init__(self) -> None:
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_head: {self.n_head} heads do not divide model.n_embd={self.n_embd} "
                f"(expected n_embd to be a multiple of n_head)"
            )
        if self.rotary and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"model.rotary: needs an even head size, got {self.n_embd // self.n_head}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation: expected one of {', '.join(ACTIVATIONS)}, got '{self.activation}'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: expected a value in [0, 1), got {self.dropout}")
        if not (self.mlp_ratio > 0 and int(self.mlp_ratio * self.n_embd) >= 1):  # (not: also catches NaN)
            raise ConfigError(
                f"model.mlp_ratio: expected a number > 0 that gives the MLP at least one unit "
                f"(mlp_ratio * n_embd >= 1), got {self.mlp_ratio}"
            )
        cap = self.logit_softcap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf):
            raise ConfigError(f"model.logit_softcap: expected a number > 0 or null (no cap), got {cap!r}")

    @property
    def padded_vocab_size(self) -> int:
        # A multiple of 64 keeps the output matmul on fast tensor-core shapes; the extra ids are never targets.
        return 64 * math.ceil(self.vocab_size / 64)

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    @property
    def d_ff(self) -> int:
        hidden = int(self.mlp_ratio * self.n_embd)
        if self.gated:  # keep the parameter count of a plain MLP: 2/3 of the width, rounded to 64
            hidden = 64 * math.ceil(2 * hidden / 3 / 64)
        return hidden


def rotary_tables(head_dim: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.type_as(x)


class KVCache:
    """Keys and values of the positions already run, one `[B, n_head, T, head_dim]` pair per layer,
    so that decoding feeds one new token per step instead of the whole sequence. The cache grows by
    concatenation, which keeps it differentiable: a prefix can be run once and its keys shared by
    several continuations (`repeat_interleave`), with gradients flowing back into the prefix."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """Positions cached (the position of the next token fed)."""
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this chunk's keys and values to `layer`'s; return all of them."""
        if self.keys[layer] is not None:
            k, v = torch.cat((self.keys[layer], k), dim=2), torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def repeat_interleave(self, n: int) -> KVCache:
        """A cache whose rows r*n ... r*n + n - 1 each hold this cache's row r."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k.repeat_interleave(n, dim=0) for k in self.keys]
        out.values = [None if v is None else v.repeat_interleave(n, dim=0) for v in self.values]
        return out


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:  # RMS norm over each head's dimensions, no weight (modded-nanogpt, nanochat)
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:  # the cos/sin rows of this chunk's positions
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask, causal = None, True
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
            past = k.size(2) - T
            if past:  # the chunk's queries see every cached key, and the chunk itself causally
                causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        # Flash / memory-efficient attention where the device has it.
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.activation = config.activation
        width = config.d_ff * (2 if config.gated else 1)
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(config.d_ff, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """The post-activation value `a` whose sparsity the lab measures (the input of c_proj)."""
        if self.activation == "gelu":
            return F.gelu(h)
        if self.activation == "relu":
            return F.relu(h)
        if self.activation == "relu2":
            return F.relu(h).square()
        if self.activation == "silu":
            return F.silu(h)
        gate, up = h.chunk(2, dim=-1)
        return (F.silu(gate) if self.activation == "swiglu" else F.gelu(gate)) * up

    def gate_pre_activation(self, h: torch.Tensor) -> torch.Tensor:
        """What decides whether a unit fires: the pre-activation, or for gated MLPs the gate's."""
        return h.chunk(2, dim=-1)[0] if self.activation in ("swiglu", "geglu") else h

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        h = self.c_fc(x)
        a = self.activate(h)
        if record is not None:
            record.setdefault("mlp", []).append(a)
            record.setdefault("mlp_pre", []).append(self.gate_pre_activation(h))
        return self.dropout(self.c_proj(a))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rope=None, record: dict | None = None, kv_cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache, layer)
        x = x + self.mlp(self.ln_2(x), record)
        if record is not None:
            record.setdefault("resid", []).append(x)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        if not config.rotary:
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # tied embeddings
        if config.rotary:
            cos, sin = rotary_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init_projections:  # modded-nanogpt: every block starts as the identity
            for block in self.transformer.h:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    nn.init.zeros_(proj.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, exclude_position_embeddings: bool = True) -> int:
        """Parameters counted once (the tied embedding is the output layer's weight; an untied
        output layer counts beside the embedding)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_position_embeddings and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N + 12 * n_layer * n_embd * block_size (PaLM appendix B, as nanoGPT),
        N the parameters that take part in a matmul: the output layer's matrix counts once, tied or
        not; an untied token embedding is a lookup (no FLOPs), as the position embedding is."""
        c = self.config
        n = self.num_params()
        if not c.tie_embeddings:
            n -= self.transformer.wte.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_embd * c.block_size

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        record: dict | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits `[B, T, padded_vocab]` and, with targets, the mean next-token cross-entropy.
        With a `kv_cache`, `idx` holds the positions after those cached, and is appended to it."""
        T = idx.size(1)
        past = 0 if kv_cache is None else kv_cache.length
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of length {past + T} exceeds model.block_size={self.config.block_size}")
        x = self.transformer.wte(idx)
        rope = None
        if self.config.rotary:
            rope = (self.rope_cos[past : past + T], self.rope_sin[past : past + T])
        else:
            x = x + self.transformer.wpe(torch.arange(past, past + T, device=idx.device))
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rope, record, kv_cache, layer)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.config.logit_softcap is not None:  # Gemma 2, modded-nanogpt: |logits| < cap, smoothly
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_id: int | list[int] | None = None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue every row of `idx` `[B, T]` by up to `max_new_tokens` tokens, `num_samples` times:
        rows b*num_samples ... (b+1)*num_samples - 1 of the output continue idx[b]. All rows decode
        together with a KV cache, one forward per new token; the prompt runs once per row and its
        keys are shared by its samples. Tokens are drawn from softmax(logits / temperature) over the
        real vocabulary (padding ids never), or picked greedily with temperature 0. Call it in eval mode.

        Returns (tokens `[B*num_samples, n]`, lengths `[B*num_samples]`), n <= max_new_tokens: row r's
        continuation is tokens[r, :lengths[r]], ending with its first stop token when it produced one
        (positions after it repeat that stop id); decoding ends once every row has stopped.
        """
        B, T = idx.shape
        if max_new_tokens < 1 or T + max_new_tokens - 1 > self.config.block_size:
            raise ValueError(
                f"generate: a prompt of {T} tokens and {max_new_tokens} new ones exceed model.block_size="
                f"{self.config.block_size}"
            )
        stops = None if stop_id is None else torch.as_tensor(stop_id, device=idx.device).view(-1)
        cache = KVCache(self.config.n_layer)
        logits = self(idx, kv_cache=cache)[0][:, -1]
        if num_samples > 1:
            logits, cache = logits.repeat_interleave(num_samples, dim=0), cache.repeat_interleave(num_samples)

        def next_logits(token: torch.Tensor) -> torch.Tensor:
            return self(token[:, None], kv_cache=cache)[0][:, -1]

        return decode(logits[:, : self.config.vocab_size], next_logits, max_new_tokens, temperature, stops, generator)


def decode(
    logits: torch.Tensor,
    next_logits,
    max_new_tokens: int,
    temperature: float,
    stops: torch.Tensor | None,
    generator: torch.Generator | None = None,
    on_logits=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoding loop of `GPT.generate` (and of lamina.finetune.proxy): from the first logits
    `[rows, vocab]` (the real vocabulary only), pick a token (greedy at temperature 0, else sampled),
    feed it to `next_logits(token) -> [rows, vocab]`, until every row has produced a stop id or
    `max_new_tokens`. `on_logits`, when given, sees each step's logits. Returns (tokens, lengths)."""
    vocab = logits.size(-1)
    rows, device = logits.size(0), logits.device
    lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens = []
    for step in range(max_new_tokens):
        logits = logits[:, :vocab].float()
        if on_logits is not None:
            on_logits(logits)
        if temperature == 0:
            token = logits.argmax(dim=-1)
        else:
            probs = F.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if stops is not None:
            token = torch.where(done, stops[0], token)  # finished rows repeat a stop id
            stopped = torch.isin(token, stops) & ~done
            lengths = torch.where(stopped, step + 1, lengths)
            done = done | stopped
        tokens.append(token)
        if step == max_new_tokens - 1 or (stops is not None and bool(done.all())):
            break
        logits = next_logits(token)
    return torch.stack(tokens, dim=1), lengths
