"""Reading a spec file safely: bounded size and alias expansion, UTF-8, YAML 1.2 core-schema scalars,
merge keys, no duplicate keys, finite numbers, and no resolver (`${oc.env:...}`) that reads the machine.

A spec must mean the same on every machine and be read within a second whatever it holds, so every
bound is checked before the expensive step it protects (the size before parsing, the expanded node
count before anything copies the document).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from knobsweep.errors import Problem, SpecError

MAX_BYTES = 2**20  # 1 MiB: a spec is a few KB; anything near this is not one
MAX_NODES = 200_000  # values after alias expansion (a billion-laughs file expands to 10^9)
MAX_DEPTH = 64  # nesting levels (a spec has under ten; OmegaConf recurses per level)

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


class SpecLoader(yaml.SafeLoader):
    """YAML 1.2 core schema: only true/false are booleans (`vllm: off` is the string "off"), `1e-4` is
    a float, `010` is ten, dates stay strings; `<<:` merge keys work; a key written twice is an error
    (PyYAML would keep the last silently)."""

    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a merged mapping's keys are defaults the node's own keys override
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text, 16) if text.startswith("0x") else int(text)

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node).lower()
        if text.lstrip("+-") == ".inf":
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text == ".nan" else float(text)


SpecLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"~|null|Null|NULL|$"), ["~", "n", "N", ""])
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"true|True|TRUE|false|False|FALSE$"), list("tTfF")
)
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(rf"(?:{_INT.pattern})$"), list("-+0123456789"))
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(rf"(?:{_FLOAT.pattern})$"), list("-+0123456789.")
)
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"<<$"), ["<"])
SpecLoader.add_constructor("tag:yaml.org,2002:bool", yaml.SafeLoader.construct_yaml_bool)
SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
SpecLoader.add_constructor("tag:yaml.org,2002:float", SpecLoader.construct_yaml_float)


def read_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES, in UTF-8 (a BOM is fine)."""
    file = str(path)
    if not path.is_file():
        raise SpecError([Problem(file, "", "no such file" if not path.exists() else "not a regular file")])
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SpecError([Problem(file, "", f"{size:,} bytes is too large for a spec; at most {MAX_BYTES:,} (1 MiB)")])
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:  # it grew since
        raise SpecError([Problem(file, "", f"is too large for a spec; at most {MAX_BYTES:,} bytes (1 MiB)")])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError([Problem(file, "", "is UTF-16 text; save it as UTF-8")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SpecError(
            [
                Problem(
                    file,
                    "",
                    f"is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}, "
                    "as latin-1 or cp1252 write it); save it as UTF-8",
                )
            ]
        ) from None


def _expanded(node: yaml.Node, seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(how many values `node` becomes once its aliases are copied out, how deep it nests), memoised:
    an alias is the node it names, so a billion-laughs file is counted in a few hundred steps."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = (MAX_NODES + 1, MAX_DEPTH + 1)  # a node inside itself (a recursive alias) never ends
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = []
    size, depth = 1, 0
    for child in children:
        child_size, child_depth = _expanded(child, seen)
        size, depth = size + child_size, max(depth, child_depth)
        if size > MAX_NODES or depth > MAX_DEPTH:
            break
    seen[id(node)] = (size, depth + 1)
    return seen[id(node)]


def parse_yaml(text: str, file: str) -> Any:
    """The document, with the alias expansion bounded before anything is built from it."""
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size, depth = _expanded(node, {})
        if size > MAX_NODES:
            raise SpecError(
                [
                    Problem(
                        file,
                        "",
                        f"expands to more than {MAX_NODES:,} values through its aliases (&name / *name); "
                        "a spec that large is not one",
                    )
                ]
            )
        if depth > MAX_DEPTH:
            raise SpecError([Problem(file, "", f"nests more than {MAX_DEPTH} levels deep; a spec is not that deep")])
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([Problem(file, "", f"YAML syntax error: {where}{problem}")]) from None
    except RecursionError:  # the parser's own recursion, before the depth is counted
        raise SpecError(
            [Problem(file, "", f"nests more than {MAX_DEPTH} levels deep; a spec is not that deep")]
        ) from None
    finally:
        loader.dispose()


def _where(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)


# `${name:...}`: a resolver call (oc.env, oc.decode, ...); `${a.b}` (another value of the spec) is fine.
def _resolver_calls(text: str) -> list[str]:
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    try:
        tree = parse(text)
    except GrammarParseError:
        return []  # not an interpolation OmegaConf understands: OmegaConf says so when it reads the spec
    found, stack = [], [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, OmegaConfGrammarParser.InterpolationResolverContext):
            found.append(item.resolverName().getText())
        stack.extend(item.getChildren() if hasattr(item, "getChildren") else ())
    return found


def check_values(data: Any, file: str, path: str = "") -> list[Problem]:
    """Non-finite numbers and resolver calls anywhere in the document (keys included)."""
    problems: list[Problem] = []
    stack = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((_where(where, key), item) for key, item in value.items())
            stack.extend((where, key) for key in value if isinstance(key, str))
        elif isinstance(value, list):
            stack.extend((_where(where, index), item) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(file, where, f"{value} is not a finite number; write a finite value"))
        elif isinstance(value, str) and "${" in value:
            names = _resolver_calls(value)
            if names:
                problems.append(
                    Problem(
                        file,
                        where,
                        f"{value!r} calls the resolver {names[0]!r}: a spec must mean the same on every machine, "
                        "so it reads no environment variable or resolver; site settings go in profiles/ or "
                        "the environment of the job (`${a.b}`, another value of the spec, is fine)",
                    )
                )
    return sorted(problems, key=lambda p: p.path)


def read_yaml(path: Path) -> Any:
    """The checked document of a spec (or defaults) file."""
    file = str(path)
    data = parse_yaml(read_text(path), file)
    problems = check_values(data, file)
    if problems:
        raise SpecError(problems)
    return data
