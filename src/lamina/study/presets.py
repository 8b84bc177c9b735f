"""A group's preset file (configs/study/<group>.yaml) read into instances of its `Preset` dataclass.

The file has one section per preset, `cpu`, `gpu` and `toy` (the test preset and a rehearsal are
derived from them: lamina.study.claim.Presets), and each section sets every field of the dataclass:

- a field of CLI words (typed `tuple[str, ...]`) is a mapping of config keys written as a lamina
  config is (`every: {trainer: {enable_progress_bar: false}}`; a dotted key, `model.warmup_steps: 0`,
  where a key comes back after others), flattened in file order to `--key value` words, each value
  as it is written in the file (`false`, `1e-5`, `[1,2]`; quoted: the text inside the quotes), so
  that a run's argv, which the study reuses fits by, says exactly what the file says;
- every other field is a plain YAML value of the field's type (`null` for None, a list for a tuple).

Bad input is one line naming the file and the key (lamina.errors.ConfigError).
"""

from __future__ import annotations

import types
from dataclasses import fields
from pathlib import Path
from typing import TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lamina.errors import ConfigError

SECTIONS = ("cpu", "gpu", "toy")
WORDS = tuple[str, ...]  # the type of a field of CLI words
P = TypeVar("P")


def read_presets(path: Path, kind: type[P]) -> dict[str, P]:
    """`kind` instances by section (cpu, gpu, toy) from the preset file at `path`."""
    loader = yaml.SafeLoader(read_text(path))
    try:
        root = parsed(path, "", loader.get_single_node)
        sections = mapping_of(path, "", root, f"a mapping of the presets {', '.join(SECTIONS)}")
        exactly(path, "", sections, SECTIONS, f"one of the presets {', '.join(SECTIONS)} (test is cpu at toy's sizes)",
                f"the presets {', '.join(SECTIONS)}")
        return {name: preset_of(path, name, sections[name], kind, loader) for name in SECTIONS}
    finally:
        loader.dispose()


def exactly(path: Path, where: str, given: dict, names, one_of: str, every: str) -> None:
    """`given` holds each of `names` and nothing else: else one line naming the key (`one_of`:
    what an unknown key should have been; `every`: what the mapping must hold)."""
    unknown = [name for name in given if name not in names]
    if unknown:
        raise ConfigError(f"{path}: {dotted(where, unknown[0])}: expected {one_of}, got an unknown one")
    missing = [name for name in names if name not in given]
    if missing:
        raise ConfigError(f"{path}: {where + ': ' if where else ''}expected {every}, got no {missing[0]}")


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: expected a readable YAML file of presets, got {err}") from err


def parsed(path: Path, where: str, read):
    """read(), its YAML error one line."""
    try:
        return read()
    except yaml.YAMLError as err:  # its message spans lines
        expected = f"{where}: expected a plain YAML value" if where else "expected a YAML file of presets"
        raise ConfigError(f"{path}: {expected}, got {' '.join(str(err).split())}") from err


def mapping_of(path: Path, where: str, node, expected: str) -> dict[str, yaml.Node]:
    """A mapping node's value nodes by key, in file order (a key twice, or one that is not a string:
    one line)."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: {where or 'the file'}: expected {expected}, got {written(node)}")
    found: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if not (isinstance(key, yaml.ScalarNode) and key.value and key.tag == "tag:yaml.org,2002:str"):
            raise ConfigError(f"{path}: {where or 'the file'}: expected {expected}, got the key {written(key)}")
        if key.value in found:
            raise ConfigError(f"{path}: {dotted(where, key.value)}: expected it once, got it twice")
        found[key.value] = value
    return found


def preset_of(path: Path, section: str, node, kind: type[P], loader: yaml.SafeLoader) -> P:
    hints = get_type_hints(kind)
    names = [f.name for f in fields(kind)]
    given = mapping_of(path, section, node, f"a mapping of {kind.__name__}'s fields ({', '.join(names)})")
    exactly(path, section, given, names, f"a field of {kind.__name__} ({', '.join(names)})",
            f"every field of {kind.__name__}")
    values = {}
    for name in names:
        where = f"{section}.{name}"
        if hints[name] == WORDS:
            values[name] = words_of(path, where, given[name])
        else:
            value = parsed(path, where, lambda: loader.construct_object(given[name], deep=True))
            values[name] = typed(path, where, value, hints[name])
    return kind(**values)


def words_of(path: Path, where: str, node, prefix: str = "") -> tuple[str, ...]:
    """`--key value` words of a mapping of config keys (nested or dotted), in file order."""
    expected = "a mapping of config keys (e.g. {trainer: {enable_progress_bar: false}})"
    words: list[str] = []
    for key, value in mapping_of(path, dotted(where, prefix), node, expected).items():
        name = dotted(prefix, key)
        if isinstance(value, yaml.MappingNode):
            words += words_of(path, where, value, name)
        else:
            words += [f"--{name}", word(path, dotted(where, name), value)]
    keys = words[0::2]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice and not prefix:  # a key set twice in one field would leave the earlier value dead
        raise ConfigError(f"{path}: {where}: expected each config key once, got {twice[2:]} twice")
    return tuple(words)


def word(path: Path, where: str, node) -> str:
    """A value as the file writes it: a plain scalar's text, a quoted one's content, a flow list's text."""
    if isinstance(node, yaml.ScalarNode) and (node.value or node.style):
        return node.value
    if isinstance(node, yaml.SequenceNode) and node.flow_style:
        return node.start_mark.buffer[node.start_mark.index:node.end_mark.index]
    raise ConfigError(f"{path}: {where}: expected a value (a scalar, or a list written [a,b]), got {written(node)}")


def typed(path: Path, where: str, value, hint):
    """`value` as a field of type `hint` (int, bool, float, None, unions of them, fixed-length
    tuples from lists); a mismatch is one line."""
    got = fit(value, hint)
    if got is MISMATCH:
        raise ConfigError(f"{path}: {where}: expected {described(hint)}, got {value!r}")
    return got


MISMATCH = object()


def fit(value, hint):
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return value if value is None else MISMATCH
    if origin in (Union, types.UnionType):
        return next((got for got in (fit(value, arg) for arg in args) if got is not MISMATCH), MISMATCH)
    if hint is bool:
        return value if isinstance(value, bool) else MISMATCH
    if hint in (int, float, str):
        numbers = (int, float) if hint is float else (hint,)
        return hint(value) if isinstance(value, numbers) and not isinstance(value, bool) else MISMATCH
    if origin is tuple and args and args[-1] is not Ellipsis:
        if not isinstance(value, list) or len(value) != len(args):
            return MISMATCH
        items = tuple(fit(v, a) for v, a in zip(value, args))
        return MISMATCH if MISMATCH in items else items
    raise TypeError(f"a preset field of type {hint} has no YAML reading")  # a dataclass this file cannot fill


def described(hint) -> str:
    if hint is type(None):
        return "null"
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(described(arg) for arg in get_args(hint))
    if get_origin(hint) is tuple:
        return f"a list of {len(get_args(hint))} ({', '.join(described(a) for a in get_args(hint))})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def written(node) -> str:
    """A node as a message shows it."""
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value) if node.value else "nothing"
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping" if node is not None else "an empty file"


def dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


__all__ = ["SECTIONS", "read_presets"]
