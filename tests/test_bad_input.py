"""Bad input, the way a new user gets it wrong, through the real `lamina` entry point: every mistake
gives exactly one line `lamina: error: <key or file>: ...` on stderr and exit code 2, before
training starts, and never a traceback; a real bug keeps its traceback. And a token cache build
that runs out of disk space fails cleanly, leaves nothing behind, and a later build is whole.

(tests/test_train.py covers an unknown key, n_head not dividing n_embd, a word for an integer, a
missing or empty data file and the console script; tests/test_data.py covers the data module's
checks one by one. This file sweeps the rest through the CLI.)
"""

from __future__ import annotations

import errno
import json
import logging
import re
from pathlib import Path

import lightning as L
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lamina.cli import main
from lamina.data import TextDataModule, packing
from lamina.errors import ConfigError
from lamina.user_errors import check_resume_config, check_trainer, user_message
from tests.test_train import fit_args

QUIET = ["--trainer.max_steps", "2", "--instrument.enabled", "false"]
RLP_MODEL = ["--model", "lamina.rlp.RLPModel"]


def one_error_line(capsys, args: list[str]) -> str:
    """Run `lamina ARGS`; assert exit code 2 and a single `lamina: error:` line; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("lamina: error: "), err
    return errors[0]


# ---- the files a new user points lamina at by mistake ---------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("files")
    (f / "syntax.yaml").write_text("model:\n  n_layer: [2\ndata:\n  batch_size: 4\n")
    (f / "tabs.yaml").write_text("model:\n\tn_layer: 2\n")
    (f / "list.yaml").write_text("- model\n- data\n")
    (f / "empty.yaml").write_text("")
    (f / "unknown.yaml").write_text("model:\n  n_layers: 3\n")
    (f / "wrongtype.yaml").write_text("data:\n  batch_size: many\n")
    (f / "latin1.yaml").write_bytes("# caf\xe9\nmodel:\n  n_layer: 2\n".encode("latin-1"))
    (f / "binary.txt").write_bytes(b"\xff\xfe\x00\x9c" + bytes(range(256)) * 40)
    (f / "latin1.txt").write_bytes(("caf\xe9 cr\xe8me br\xfbl\xe9e\n" * 2000).encode("latin-1"))
    (f / "no_text").mkdir()
    (f / "no_text" / "weights.bin").write_bytes(b"\x00" * 100)
    (f / "table.csv").write_text("text\nhello\n")
    (f / "broken.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (f / "body.jsonl").write_text("".join(json.dumps({"body": "the fox " * 40}) + "\n" for _ in range(100)))
    (f / "numbers.jsonl").write_text("".join(json.dumps({"text": i}) + "\n" for i in range(100)))
    pq.write_table(pa.table({"body": ["the fox " * 40] * 100}), f / "body.parquet")
    (f / "fake.parquet").write_text("just text with a parquet name\n")
    (f / "a_file").write_text("not a folder\n")
    (f / "random.ckpt").write_bytes(bytes((i * 7919 + 13) % 256 for i in range(5000)))
    (f / "text.ckpt").write_text("I am a text file, not a checkpoint\n")
    (f / "empty.ckpt").write_bytes(b"")
    torch.save([1, 2, 3], f / "list.ckpt")
    torch.save({"weights": torch.zeros(2)}, f / "no_state.ckpt")
    return f


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One token cache for the sweep: the world corpus is tokenised once, not once per case."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding runs/good (2 steps, n_embd 32) and runs/weights (a weights-only checkpoint)."""
    root = tmp_path_factory.mktemp("trained")
    main(fit_args(root, "good", *QUIET))
    main(fit_args(root, "weights", *QUIET, "--checkpoint.save_weights_only", "true"))
    return root


def last_ckpt(root: Path, name: str) -> Path:
    return next((root / "runs" / name).glob("version_*/checkpoints/last.ckpt"))


# ---- the sweep ------------------------------------------------------------------------------------

# (id, extra args with {f} for the files folder and {ck} for a checkpoint of runs/good, the line's pattern)
CASES = [
    # wrong types
    ("batch_size 2.5", ["--data.batch_size", "2.5"], r"data\.batch_size: expected an integer, got '2\.5'"),
    ("lr fast", ["--model.lr", "fast"], r"model\.lr: expected a number, got 'fast'"),
    ("lr nan", ["--model.lr", "nan"], r"model\.lr: expected a number, got 'nan'"),
    ("max_bytes 1e6", ["--data.max_bytes", "1e6"], r"data\.max_bytes: expected an integer or null, got '1e6'"),
    ("bias maybe", ["--model.bias", "maybe"], r"model\.bias: expected true or false, got 'maybe'"),
    ("betas one number", ["--model.betas", "[0.9]"], r"model\.betas: expected a tuple with 2 elements"),
    ("probe_files not a list", ["--data.probe_files", "x.txt"], r"data\.probe_files: expected a list"),
    # impossible shapes and values
    ("n_layer 0", ["--model.n_layer", "0"], r"model\.n_layer: expected an integer >= 1, got 0"),
    ("n_embd 0", ["--model.n_embd", "0"], r"model\.n_embd: expected an integer >= 1, got 0"),
    ("n_head 0", ["--model.n_head", "0"], r"model\.n_head: expected an integer >= 1, got 0"),
    ("block_size 0", ["--model.block_size", "0"], r"model\.block_size: expected an integer >= 1, got 0"),
    ("block_size -4", ["--model.block_size", "-4"], r"model\.block_size: expected an integer >= 1, got -4"),
    ("block_size huge", ["--model.block_size", "100000"], r"data\.val_tokens: expected an integer >= block_size"),
    ("mlp_ratio 0", ["--model.mlp_ratio", "0"], r"model\.mlp_ratio: expected a number > 0 .*got 0\.0"),
    ("mlp_ratio tiny", ["--model.mlp_ratio", "0.001"], r"model\.mlp_ratio: .*mlp_ratio \* n_embd >= 1"),
    ("mlp_ratio -1", ["--model.mlp_ratio", "-1"], r"model\.mlp_ratio: .*got -1\.0"),
    ("dropout 1.5", ["--model.dropout", "1.5"], r"model\.dropout: expected a number in \[0, 1\), got 1\.5"),
    ("dropout -0.1", ["--model.dropout", "-0.1"], r"model\.dropout: .*got -0\.1"),
    ("rotary odd head", ["--model.rotary", "true", "--model.n_head", "32"],
     r"model\.rotary: needs an even head size"),
    ("activation", ["--model.activation", "tanh"], r"model\.activation: expected one of gelu, .*got 'tanh'"),
    ("vocab_size set directly", ["--model.vocab_size", "100"],
     r"model\.vocab_size: is set from data\.tokenizer and data\.vocab_size"),
    ("lr -1", ["--model.lr", "-1"], r"model\.lr: expected a non-negative number, got -1\.0"),
    ("weight_decay -1", ["--model.weight_decay", "-1"], r"model\.weight_decay: expected a non-negative number"),
    ("warmup -1", ["--model.warmup_steps", "-1"], r"model\.warmup_steps: expected an integer >= 0, got -1"),
    # (jsonargparse's own NonNegativeFloat would take inf: lamina's number types are finite)
    ("lr inf", ["--model.lr", "inf"], r"model\.lr: expected a number, got 'inf'"),
    ("betas 1.0", ["--model.betas", "[0.9, 1.0]"], r"model\.betas: expected a number in \[0, 1\), got 1\.0"),
    ("peak_flops 0", ["--throughput.peak_flops", "0"],
     r"throughput\.peak_flops: expected a number > 0 or null, got 0\.0"),
    ("on_nonfinite", ["--model.on_nonfinite", "ignore"],
     r"model\.on_nonfinite: expected one of stop, skip, got 'ignore'"),
    ("max_nonfinite_skips 0", ["--model.max_nonfinite_skips", "0"],
     r"model\.max_nonfinite_skips: expected an integer >= 1, got 0"),
    # trainer
    ("max_steps 0", ["--trainer.max_steps", "0"], r"trainer\.max_steps: expected a positive number of steps"),
    ("max_steps -1", ["--trainer.max_steps", "-1"], r"trainer\.max_steps: expected a positive number of steps"),
    ("max_steps 2.5", ["--trainer.max_steps", "2.5"], r"trainer\.max_steps: expected an integer, got '2\.5'"),
    ("devices 0", ["--trainer.devices", "0"], r"trainer\.devices: .*devices='0'"),
    ("devices two", ["--trainer.devices", "two"], r"trainer\.devices: .*should be an int > 0"),
    ("precision 17", ["--trainer.precision", "17"],
     r"trainer\.precision: expected one of 64, 32, 16, .*bf16-mixed.* got '17'"),
    ("strategy", ["--trainer.strategy", "fastest"], r"trainer\.strategy: .*strategy='fastest'"),
    ("unknown trainer key", ["--trainer.max_stepz", "3"], r"trainer\.max_stepz: no such key"),
    ("seed word", ["--seed_everything", "lucky"],
     r"seed_everything: expected true or false or an integer, got 'lucky'"),
    ("checkpoint every -1", ["--checkpoint.every_n_train_steps", "-1"],
     r"checkpoint\.every_n_train_steps: .*Must be >= 0"),
    ("checkpoint mode", ["--checkpoint.mode", "middle"], r"checkpoint\.mode: .*but got middle"),
    # config files
    ("config missing", ["--config", "{f}/nope.yaml"], r"config: no such file '.*nope\.yaml'"),
    ("config folder", ["--config", "{f}/no_text"], r"config: '.*no_text' is a folder, expected a YAML file"),
    ("config syntax", ["--config", "{f}/syntax.yaml"],
     r"config: '.*syntax\.yaml' is not valid YAML: line \d+, column \d+: "),
    ("config tabs", ["--config", "{f}/tabs.yaml"],
     r"config: '.*tabs\.yaml' is not valid YAML: line 2, column 1: found character '\\t'"),
    ("config list", ["--config", "{f}/list.yaml"],
     r"config: '.*list\.yaml': expected a mapping of sections .*got a list"),
    ("config empty", ["--config", "{f}/empty.yaml"],
     r"config: '.*empty\.yaml': expected a mapping .*got an empty file"),
    ("config latin-1", ["--config", "{f}/latin1.yaml"], r"config: '.*latin1\.yaml' is not UTF-8 text"),
    ("config unknown key", ["--config", "{f}/unknown.yaml"], r"model\.n_layers: no such key$"),
    ("config inline, not YAML", ["--config", "trainer: [1"],
     r"config: 'trainer: \[1' is no file, nor valid YAML: line 1, column \d+: "),
    ("config wrong type", ["--config", "{f}/wrongtype.yaml"], r"data\.batch_size: expected an integer, got 'many'"),
    # data sources
    ("folder without text", ["--data.source", "{f}/no_text"], r"data\.source: folder '.*no_text' holds no \.txt"),
    ("glob matching nothing", ["--data.source", "{f}/nothing*.txt"],
     r"data\.source: no file matches '.*nothing\*\.txt'"),
    ("binary .txt", ["--data.source", "{f}/binary.txt"],
     r"data\.source: cannot read '.*binary\.txt': 'utf-8' codec can't decode"),
    ("latin-1 .txt", ["--data.source", "{f}/latin1.txt"],
     r"data\.source: cannot read '.*latin1\.txt': 'utf-8' codec"),
    ("csv", ["--data.source", "{f}/table.csv"], r"data\.source: '.*table\.csv' is not a \.txt, \.jsonl"),
    ("jsonl invalid", ["--data.source", "{f}/broken.jsonl"],
     r"data\.source: cannot read '.*broken\.jsonl': JSON parse error"),
    ("jsonl no text column", ["--data.source", "{f}/body.jsonl"],
     r"data\.text_column: no column 'text' in '.*body\.jsonl' \(columns: 'body'\)"),
    ("jsonl numbers", ["--data.source", "{f}/numbers.jsonl"],
     r"data\.text_column: column 'text' of '.*numbers\.jsonl' holds int"),
    ("parquet no text column", ["--data.source", "{f}/body.parquet"],
     r"data\.text_column: no column 'text' in '.*body\.parquet'"),
    ("not a parquet", ["--data.source", "{f}/fake.parquet"],
     r"data\.source: cannot read '.*fake\.parquet': .*not a parquet file"),
    ("source empty string", ["--data.source", ""],
     r"data\.source: expected 'world', a Hugging Face dataset name or a local path"),
    ("val_fraction 0", ["--data.val_fraction", "0"],
     r"data\.val_fraction: expected a number between 0 and 1 \(exclusive\), got 0\.0"),
    ("val_fraction 1", ["--data.val_fraction", "1"], r"data\.val_fraction: .*got 1\.0"),
    ("max_bytes 10", ["--data.max_bytes", "10"],
     r"data\.source: 'world' is a single passage of 10 bytes, which cannot be split into train and val"),
    ("families empty", ["--data.families", "[]"], r"data\.families: empty"),
    ("probe file missing", ["--data.probe_files", "[{f}/nope.txt]"],
     r"data\.probe_files: no such file '.*nope\.txt'"),
    ("probe file binary", ["--data.probe_files", "[{f}/binary.txt]"],
     r"data\.probe_files: '.*binary\.txt' is not UTF-8 text \(byte 0 is 0xff\)"),
    ("tokenizer", ["--data.tokenizer", "words"], r"data\.tokenizer: expected 'byte' or 'bpe', got 'words'"),
    ("bpe vocab 100", ["--data.tokenizer", "bpe", "--data.vocab_size", "100"],
     r"data\.vocab_size: expected an integer >= 259 for bpe"),
    ("num_workers -1", ["--data.num_workers", "-1"], r"data\.num_workers: expected an integer >= 0, got -1"),
    ("cache_dir a file", ["--data.cache_dir", "{f}/a_file"],
     r"data\.cache_dir: '.*a_file' exists and is not a folder"),
    ("cache_dir unwritable", ["--data.cache_dir", "/proc/lamina-cache"],
     r"data\.cache_dir: cannot write the token cache in /proc/lamina-cache/\w+ \("),
    # checkpoints
    ("ckpt missing", ["--ckpt_path", "{f}/nope.ckpt"], r"ckpt_path: no such checkpoint file '.*nope\.ckpt'"),
    ("ckpt folder", ["--ckpt_path", "{f}/no_text"], r"ckpt_path: '.*no_text' is a folder, expected a \.ckpt file"),
    ("ckpt random bytes", ["--ckpt_path", "{f}/random.ckpt"],
     r"ckpt_path: cannot read '.*random\.ckpt' as a lamina checkpoint \(\w+: "),
    ("ckpt text file", ["--ckpt_path", "{f}/text.ckpt"],
     r"ckpt_path: cannot read '.*text\.ckpt' as a lamina checkpoint"),
    ("ckpt empty file", ["--ckpt_path", "{f}/empty.ckpt"],
     r"ckpt_path: cannot read '.*empty\.ckpt' as a lamina checkpoint \(EOFError"),
    ("ckpt a list", ["--ckpt_path", "{f}/list.ckpt"], r"ckpt_path: '.*list\.ckpt' is not a lamina checkpoint"),
    ("ckpt no state_dict", ["--ckpt_path", "{f}/no_state.ckpt"],
     r"ckpt_path: '.*no_state\.ckpt' is not a lamina checkpoint \(no state_dict\)"),
    ("ckpt best", ["--ckpt_path", "best"], r"ckpt_path: expected a checkpoint file or 'last', got 'best'$"),
    ("ckpt hpc", ["--ckpt_path", "hpc"], r"ckpt_path: expected a checkpoint file or 'last', got 'hpc'$"),
    ("ckpt last, no run", ["--ckpt_path", "last"],
     r"ckpt_path: 'last' found no checkpoints/last\.ckpt under .*runs/bad/version_\*"),
    ("init_from missing", ["--model.init_from", "{f}/nope.ckpt"],
     r"model\.init_from: no such checkpoint file '.*nope\.ckpt'"),
    ("init_from random bytes", ["--model.init_from", "{f}/random.ckpt"],
     r"model\.init_from: cannot read '.*random\.ckpt' as a lamina checkpoint"),
    ("init_from text", ["--model.init_from", "{f}/text.ckpt"],
     r"model\.init_from: cannot read '.*text\.ckpt' as a lamina checkpoint"),
    ("init_from a list", ["--model.init_from", "{f}/list.ckpt"],
     r"model\.init_from: '.*list\.ckpt' is not a lamina checkpoint"),
    ("init_from wrong shape", ["--model.init_from", "{ck}", "--model.n_embd", "64"],
     r"model\.init_from: the weights in '.*last\.ckpt' do not fit this model: model\.n_embd is 32 there, 64 here"),
    # instrumentation and RLP
    ("instrument every 0", ["--instrument.enabled", "true", "--instrument.every_n_steps", "0"],
     r"instrument\.every_n_steps: expected an integer >= 1, got 0"),
    ("instrument impl", ["--instrument.enabled", "true", "--instrument.impl", "fast"],
     r"instrument\.impl: expected one of auto, kernel, reference, got 'fast'"),
    ("instrument active", ["--instrument.enabled", "true", "--instrument.sparsity.active", "relu"],
     r"instrument\.sparsity\.active: expected one of sign, cett, eps, got 'relu'"),
    ("instrument cett", ["--instrument.enabled", "true", "--instrument.sparsity.cett", "1.5"],
     r"instrument\.sparsity\.cett: expected a number in \(0, 1\), got 1\.5"),
    ("instrument null draws", ["--instrument.enabled", "true", "--instrument.modularity.null_draws", "4"],
     r"instrument\.modularity\.null_draws: expected an integer >= 8, got 4"),
    ("instrument eps -1", ["--instrument.sparsity.eps", "-1"],
     r"instrument\.sparsity\.eps: expected a non-negative number or null, got -1\.0"),
    ("instrument probe batch 0", ["--instrument.probes.batch_size", "0"],
     r"instrument\.probes\.batch_size: expected an integer >= 1 or null, got 0"),
    ("instrument ablation mode", ["--instrument.enabled", "true", "--instrument.ablation.mode", "half"],
     r"instrument\.ablation\.mode: expected one of mean, zero, got 'half'"),
    # the sections (lamina.instrument.config): a bad nested value or key, on the command line or in YAML
    ("instrument nested every 0", ["--instrument.modularity.every_n_steps", "0"],
     r"instrument\.modularity\.every_n_steps: expected an integer >= 1 or null, got 0$"),
    ("instrument nested key", ["--instrument.modularity.cadence", "300"],
     r"instrument\.modularity\.cadence: no such key"),
    ("instrument nested key in YAML", ["--config", "instrument: {hierarchy: {item: 5}}"],
     r"instrument\.hierarchy\.item: no such key$"),
    ("instrument nested value in YAML", ["--config", "instrument: {context: {prompts: 2}}"],
     r"instrument\.context\.prompts: expected an integer >= 4, got 2$"),
    ("instrument shuffled draws 1", ["--instrument.modularity.shuffled_draws", "1"],  # the section's own check
     r"instrument\.modularity\.shuffled_draws: expected 0 \(off\) or at least 2 draws .*got 1$"),
    ("instrument section given a value", ["--instrument.probes", "5"],
     r"instrument\.probes: expected a mapping of its keys \(--instrument\.probes\.<key> VALUE\), got '5'$"),
    ("rlp group_size 1", [*RLP_MODEL, "--model.rlp.group_size", "1"],
     r"model\.rlp\.group_size: expected an integer >= 2 .*got 1"),
    ("rlp temperature 0", [*RLP_MODEL, "--model.rlp.temperature", "0"],
     r"model\.rlp\.temperature: expected a number > 0, got 0\.0"),
    ("rlp temperature -1", [*RLP_MODEL, "--model.rlp.temperature", "-1"],
     r"model\.rlp\.temperature: expected a number > 0, got -1\.0"),
    ("rlp thoughts", [*RLP_MODEL, "--model.rlp.thoughts", "wrong"],
     r"model\.rlp\.thoughts: expected one of policy, filler, frozen, got 'wrong'"),
    ("rlp thought too long", [*RLP_MODEL, "--model.rlp.max_thought_tokens", "64"],
     r"model\.rlp\.context_tokens: .*do not fit in model\.block_size=32"),
    ("thought_eval level", ["--thought_eval.levels", "[9]"], r"thought_eval\.levels: unknown level 9"),
    ("rlp filler of 3 tokens", [*RLP_MODEL, "--model.rlp.thoughts", "filler", "--model.rlp.filler_token", "abc",
                                "--model.rlp.group_size", "2", "--model.rlp.max_thought_tokens", "4"],
     r"model\.rlp\.filler_token: 'abc' is 3 tokens, expected one"),
    ("RLPModel without rlp", RLP_MODEL, r"model\.rlp: lamina\.rlp\.RLPModel needs the RLP settings"),
    ("not a model class", ["--model", "lamina.data.TextDataModule"], r"^lamina: error: model: "),
    # keys that moved: where they are now (a config file of an older lamina is read in today's layout)
    ("moved peak_flops", ["--model.peak_flops", "1e15"],
     r"model\.peak_flops: no such key; it moved to throughput\.peak_flops$"),
    ("moved thought_eval", ["--model.thought_eval.levels", "[1]"],
     r"model\.thought_eval\.levels: no such key; model\.thought_eval moved to thought_eval, a section of its own"),
    ("moved rlp", ["--model.rlp.group_size", "2"],
     r"model\.rlp\.group_size: no such key; model\.rlp moved to the model class lamina\.rlp\.RLPModel "
     r"\(.*--model lamina\.rlp\.RLPModel --model\.rlp\.\* on the command line\)$"),
    # the flat instrument keys of before, each now in its section
    ("moved instrument key", ["--instrument.modularity_every_n_steps", "300"],
     r"instrument\.modularity_every_n_steps: no such key; it moved to instrument\.modularity\.every_n_steps$"),
    ("moved probe key", ["--instrument.probe_tokens", "512"],
     r"instrument\.probe_tokens: no such key; it moved to instrument\.probes\.tokens$"),
    ("moved instrument switch", ["--instrument.ablation", "false"],
     r"instrument\.ablation: expected a mapping of its keys .*, got .false.; the switch instrument\.ablation "
     r"\(true/false\) moved to instrument\.ablation\.enabled$"),
]

NO_GPU = [
    ("accelerator gpu", ["--trainer.accelerator", "gpu"], r"trainer\.accelerator: .*gpu"),
    ("accelerator cuda", ["--trainer.accelerator", "cuda"], r"trainer\.accelerator: .*not available.*\(got 'cuda'\)"),
]


CAUGHT_LATE = [  # mistakes Lightning accepts but fails on (or misbehaves with) later: checked before training
    ("ckpt other n_embd", ["--ckpt_path", "{ck}", "--model.n_embd", "64"],
     r"ckpt_path: .*model\.n_embd is 32 there, 64 here"),  # silently trains n_embd 32
    ("ckpt other n_layer", ["--ckpt_path", "{ck}", "--model.n_layer", "3"],
     r"ckpt_path: .*model\.n_layer is 2 there, 3 here"),
    # ZeroDivisionError at step 1
    ("val_check_interval 0", ["--trainer.val_check_interval", "0"], r"trainer\.val_check_interval: "),
    # ZeroDivisionError in LanguageModel.on_train_batch_end
    ("log_every_n_steps 0", ["--trainer.log_every_n_steps", "0"], r"trainer\.log_every_n_steps: "),
    # ZeroDivisionError at step 1
    ("accumulate 0", ["--trainer.accumulate_grad_batches", "0"], r"trainer\.accumulate_grad_batches: "),
    # trains, with the clip coefficient negative
    ("clip -1", ["--trainer.gradient_clip_val", "-1"], r"trainer\.gradient_clip_val: "),
    ("max_epochs 0", ["--trainer.max_epochs", "0"], r"trainer\.max_epochs: "),  # exits 0 having trained nothing
    # FileExistsError at the first save
    ("checkpoint dirpath a file", ["--checkpoint.dirpath", "{f}/a_file"], r"checkpoint\.dirpath: "),
    # NotADirectoryError at fit start
    ("logger save_dir a file", ["--trainer.logger.init_args.save_dir", "{f}/a_file"], r"save_dir: "),
    ("betas 1.5", ["--model.betas", "[1.5, 0.95]"], r"model\.betas: "),  # ValueError from AdamW
    ("min_lr_ratio 2", ["--model.min_lr_ratio", "2"], r"model\.min_lr_ratio: "),  # lr climbs
    ("peak_flops -1", ["--throughput.peak_flops", "-1"], r"throughput\.peak_flops: "),  # negative MFU
]


def fill(words: list[str], files: Path, trained: Path | None = None) -> list[str]:
    ck = str(last_ckpt(trained, "good")) if trained is not None else ""
    return [w.replace("{f}", str(files)).replace("{ck}", ck) for w in words]


@pytest.mark.parametrize("name, extra, pattern", CASES + CAUGHT_LATE, ids=[c[0] for c in CASES + CAUGHT_LATE])
def test_mistake_gives_one_line(name, extra, pattern, files, shared_cache, request, tmp_path, capsys):
    trained = request.getfixturevalue("trained") if "{ck}" in " ".join(extra) else None
    args = fit_args(tmp_path, "bad", *QUIET, "--data.cache_dir", str(shared_cache), *fill(extra, files, trained))
    line = one_error_line(capsys, args)
    assert re.search(pattern, line), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine has")
@pytest.mark.parametrize("name, extra, pattern", NO_GPU, ids=[c[0] for c in NO_GPU])
def test_gpu_on_a_machine_without_one(name, extra, pattern, tmp_path, shared_cache, capsys):
    line = one_error_line(capsys, fit_args(tmp_path, "bad", *QUIET, "--data.cache_dir", str(shared_cache), *extra))
    assert re.search(pattern, line), line


# ---- resuming: `--ckpt_path last` of a run whose shape or data changed, a weights-only file -----


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--model.n_embd", "64"], r"model\.n_embd is 32 there, 64 here"),
        (["--model.activation", "swiglu"], r"model\.activation is 'gelu' there, 'swiglu' here"),
        (["--data.tokenizer", "bpe", "--data.vocab_size", "400"], r"model\.vocab_size is 259 there, 400 here"),
    ],
    ids=["n_embd", "activation", "tokenizer"],
)
def test_resuming_with_another_shape_names_what_differs(extra, pattern, trained, capsys):
    line = one_error_line(capsys, fit_args(trained, "good", *QUIET, "--ckpt_path", "last", *extra))
    assert re.search(r"ckpt_path: the weights in '.*runs/good/version_0/checkpoints/last\.ckpt' do not fit this "
                     r"model: ", line), line
    assert re.search(pattern, line), line


def test_resuming_from_weights_only_points_to_init_from(trained, tmp_path, capsys):
    weights = last_ckpt(trained, "weights")
    line = one_error_line(capsys, fit_args(tmp_path, "bad", *QUIET, "--ckpt_path", str(weights)))
    assert "holds model weights only and cannot resume training" in line and "model.init_from" in line


def test_checkpoint_whose_hyperparameters_no_longer_parse(trained, tmp_path, capsys):
    # e.g. a checkpoint of an older lamina, with a model key renamed since
    checkpoint = torch.load(last_ckpt(trained, "good"), weights_only=False)
    checkpoint["hyper_parameters"]["n_layerz"] = 3
    torch.save(checkpoint, tmp_path / "old.ckpt")
    line = one_error_line(capsys, fit_args(tmp_path, "bad", *QUIET, "--ckpt_path", str(tmp_path / "old.ckpt")))
    assert re.search(r"ckpt_path: the hyperparameters saved in '.*old\.ckpt' do not fit this config: "
                     r"model\.n_layerz: no such key$", line), line


def test_rlp_resume_from_a_next_token_run(trained, capsys):
    rlp = [*RLP_MODEL, "--model.rlp.group_size", "2", "--model.rlp.max_thought_tokens", "4"]
    line = one_error_line(capsys, fit_args(trained, "good", *QUIET, "--ckpt_path", "last", *rlp))
    assert line.startswith("lamina: error: ckpt_path: the checkpoint holds no RLP EMA model")
    # a checkpoint file's model settings take the config's place: a model class the user set must be its
    file = str(last_ckpt(trained, "good"))
    line = one_error_line(capsys, fit_args(trained, "good", *QUIET, "--ckpt_path", file, *rlp))
    assert re.search(r"ckpt_path: '.*last\.ckpt' is a checkpoint of a lamina\.lm\.LanguageModel, this config's model "
                     r"is a lamina\.rlp\.RLPModel \(.*model\.init_from\)$", line), line


# ---- other entry points and the line between a mistake and a bug ---------------------------------


def test_prepare_reports_mistakes_in_one_line(files, tmp_path, capsys):
    args = fit_args(tmp_path, "bad", "--data.source", f"{files}/table.csv")[1:]  # without "fit"
    assert "table.csv' is not a .txt" in one_error_line(capsys, ["prepare", *args])


def test_val_tokens_beyond_the_val_split_validate_on_all_of_it(tmp_path, shared_cache, caplog):
    # Not a mistake (the default 65,536 is more than a small corpus holds): the run goes on, and says so.
    logging.getLogger("lightning.pytorch").addHandler(caplog.handler)
    try:
        main(fit_args(tmp_path, "big_val", *QUIET, "--data.cache_dir", str(shared_cache),
                      "--data.val_tokens", "100000000"))
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(caplog.handler)
    assert re.search(r"data\.val_tokens is 100,000,000 but the val split holds [\d,]+ tokens", caplog.text)
    assert (tmp_path / "runs" / "big_val" / "version_0" / "checkpoints" / "last.ckpt").exists()


def test_a_bug_keeps_its_traceback(tmp_path, shared_cache, monkeypatch):
    def broken_setup(self, stage=None):
        raise RuntimeError("a bug in lamina, not the user's mistake")

    monkeypatch.setattr(TextDataModule, "setup", broken_setup)
    with pytest.raises(RuntimeError, match="a bug in lamina"):
        main(fit_args(tmp_path, "bug", *QUIET, "--data.cache_dir", str(shared_cache)))


def test_only_recognised_mistakes_get_a_line():
    assert user_message(ZeroDivisionError("integer modulo by zero")) is None
    assert user_message(KeyError("optimizer_states")) is None
    assert user_message(ConfigError("model.n_layer: expected ...")) == "model.n_layer: expected ..."
    try:
        try:
            raise ConfigError("model.rlp.group_size: expected an integer >= 2, got 1")
        except ConfigError as cause:
            raise ValueError("Does not validate against any of the Union subtypes") from cause
    except ValueError as wrapped:
        assert user_message(wrapped) == "model.rlp.group_size: expected an integer >= 2, got 1"
    try:
        try:
            raise ConfigError("data.source: ...")
        except ConfigError:
            raise RuntimeError("a bug while handling it")  # noqa: B904 - implicit context, not a cause
    except RuntimeError as bug:
        assert user_message(bug) is None


def test_parsed_numbers_reach_the_model_as_builtins():
    # Parsing hands a restricted number over as an instance of its type's own int/float subclass;
    # in a checkpoint (hyperparameters, optimizer groups) torch.load(weights_only=True) refuses it.
    from jsonargparse.typing import OpenUnitInterval, PositiveInt

    from lamina.config_types import Fraction, NonNegativeNumber
    from lamina.instrument import Instrumentation
    from lamina.lm import LanguageModel

    lm = LanguageModel(n_layer=PositiveInt(1), n_head=PositiveInt(2), n_embd=PositiveInt(32),
                       block_size=PositiveInt(16), lr=NonNegativeNumber(0.01), betas=(Fraction(0.9), Fraction(0.95)))
    assert type(lm.hparams.n_layer) is int and type(lm.config.n_embd) is int
    assert type(lm.hparams.lr) is float and [type(b) for b in lm.hparams.betas] == [float, float]
    instrument = Instrumentation(every_n_steps=PositiveInt(3), sparsity={"cett": OpenUnitInterval(0.5)})
    assert type(instrument.every_n_steps) is int and type(instrument.modularity.every_n_steps) is int
    assert type(instrument.sparsity.cett) is float


# ---- the checks LaminaCLI's hooks run (check_trainer, check_resume_config) -----------------------------


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(log_every_n_steps=0), "trainer.log_every_n_steps"),
        (dict(accumulate_grad_batches=0), "trainer.accumulate_grad_batches"),
        (dict(val_check_interval=0), "trainer.val_check_interval"),
        (dict(gradient_clip_val=-1.0), "trainer.gradient_clip_val"),
        (dict(max_epochs=0), "trainer.max_epochs"),
    ],
)
def test_check_trainer_names_the_key(kwargs, key):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **kwargs)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: expected "):
        check_trainer(trainer)


def test_check_trainer_passes_good_settings_and_refuses_a_file_for_a_folder(tmp_path):
    check_trainer(L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, max_steps=5))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(dirpath=a_file)])
    with pytest.raises(ConfigError, match=r"^checkpoint\.dirpath: '.*a_file' exists and is not a folder"):
        check_trainer(trainer)


def test_check_resume_config_refuses_a_shape_the_user_set(trained, files):
    ck = str(last_ckpt(trained, "good"))
    defaults = {"n_layer": 4, "n_embd": 128, "n_head": 4}
    check_resume_config(ck, {"n_layer": 4, "n_embd": 128, "n_head": 4}, defaults)  # defaults: taken from ckpt
    check_resume_config(ck, {"n_layer": 2, "n_embd": 32, "n_head": 2}, defaults)  # set, and equal
    with pytest.raises(ConfigError, match=r"^ckpt_path: .*model\.n_embd is 32 there, 64 here"):
        check_resume_config(ck, {"n_layer": 2, "n_embd": 64, "n_head": 2}, defaults)
    with pytest.raises(ConfigError, match=r"^ckpt_path: cannot read '.*random\.ckpt' as a lamina checkpoint"):
        check_resume_config(str(files / "random.ckpt"), {}, {})
    with pytest.raises(ConfigError, match=r"^ckpt_path: no such checkpoint file"):
        check_resume_config(str(files / "nope.ckpt"), {}, {})


# ---- disk: a token cache build that runs out of space ---------------------------------------------


def fill_disk_after(monkeypatch, n_bytes: int) -> None:
    """SplitWriter.write lands `n_bytes` in all, then fails the way a full disk does."""
    room = {"left": n_bytes}
    real_write = packing.SplitWriter.write

    def write(self, ids):
        data = ids.tobytes()
        if len(data) > room["left"]:
            self.file.write(data[: room["left"]])
            room["left"] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        room["left"] -= len(data)
        real_write(self, ids)

    monkeypatch.setattr(packing.SplitWriter, "write", write)


def cache_folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and p.name != "tokenizers")


def test_full_disk_fails_cleanly_and_a_later_build_is_whole(tmp_path, monkeypatch, capsys, caplog):
    cache = tmp_path / "cache"
    fill_disk_after(monkeypatch, 100_000)
    line = one_error_line(capsys, fit_args(tmp_path, "full", *QUIET))
    assert re.search(
        rf"^lamina: error: data\.cache_dir: out of disk space building the token cache in "
        rf"{re.escape(str(cache))}/\w+ \(0\.1 MB written before it failed\); free space or point "
        rf"data\.cache_dir elsewhere$",
        line,
    ), line
    assert cache_folders(cache) == [], "neither the cache folder nor its temp folder may be left"
    assert not (tmp_path / "runs" / "full" / "version_0" / "checkpoints").exists(), "no training started"

    monkeypatch.undo()  # space again
    logging.getLogger("lightning.pytorch").addHandler(caplog.handler)
    try:
        main(["prepare", *fit_args(tmp_path, "full")[1:]])
        main(["prepare", *fit_args(tmp_path / "undisturbed", "full")[1:]])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(caplog.handler)
    [built] = cache_folders(cache)
    [reference] = cache_folders(tmp_path / "undisturbed" / "cache")
    assert built.name == reference.name and packing.is_complete(built)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (built / name).read_bytes() == (reference / name).read_bytes(), name
    size = re.search(rf"lamina: token cache {re.escape(str(built))}: ([\d,]+) train \+ ([\d,]+) val tokens, "
                     rf"(\d+\.\d) MB on disk", caplog.text)
    assert size, caplog.text
    meta = packing.read_meta(built)["splits"]
    assert [int(size.group(i).replace(",", "")) for i in (1, 2)] == [meta["train"]["tokens"], meta["val"]["tokens"]]
    assert float(size.group(3)) == round(packing.disk_usage(built) / 1e6, 1)


def test_unwritable_tokenizer_cache_is_one_line(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lamina.data.tokenizer.save_tokenizer", full)
    line = one_error_line(capsys, fit_args(tmp_path, "bpe", *QUIET, "--data.tokenizer", "bpe",
                                           "--data.vocab_size", "300", "--data.tokenizer_sample_bytes", "20000"))
    assert re.search(r"data\.cache_dir: cannot save the trained tokenizer to .*tokenizers/bpe-300-\w+\.json "
                     r"\(No space left on device\)", line), line


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ..."),
                                   MemoryError()])
def test_out_of_memory_is_one_line_naming_the_sizes(error, tmp_path, shared_cache, capsys, monkeypatch):
    from lamina.lm import LanguageModel

    def training_step(self, batch, batch_idx):
        raise error

    monkeypatch.setattr(LanguageModel, "training_step", training_step)
    line = one_error_line(capsys, fit_args(tmp_path, "bad", *QUIET, "--data.cache_dir", str(shared_cache)))
    assert re.search(r"data\.batch_size: out of (GPU|host) memory.*lower data\.batch_size", line), line
