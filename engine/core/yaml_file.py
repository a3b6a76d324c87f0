"""An input YAML file read against a pydantic schema, every fault named with
its file and line: bytes that are not UTF-8, YAML syntax, a key given twice,
and whatever the schema refuses (an unknown key, with the likely one it
meant; a value of the wrong kind or out of range). Pydantic's error location
(keys and list indexes) is walked down the composed YAML nodes to the line."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:  # pydantic is imported where a file is validated, not at start-up
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")
Loc = tuple[str | int, ...]


class InputFileError(ValueError):
    """An input file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class YamlFile:
    """A YAML file as read: its bytes and its node tree (for the lines)."""

    path: Path
    data: bytes
    root: yaml.Node | None

    def line(self, loc: Loc) -> int:
        """The line of the node at loc (as deep as the file goes)."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            at, node = found  # a key's line, not its block's first one
            line = at.start_mark.line + 1
        return line

    def fault(self, loc: Loc, message: str) -> str:
        where = ".".join(str(p) for p in loc)
        return f"{self.path}, line {self.line(loc)}: {where + ': ' if where else ''}{message}"


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(where it is said, its value) of a mapping's key or a list's item."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
            and 0 <= part < len(node.value):
        return node.value[part], node.value[part]
    return None


def read_yaml(path: Path, what: str) -> tuple[YamlFile, Any]:
    """The file's nodes and its data; InputFileError names the line of any
    fault below the schema (what: 'the rules file', for the messages)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputFileError(f"{path}, line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; "
                             "save the file as UTF-8") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        file = YamlFile(path, data, root)
        _refuse_repeated_keys(file, root)
        value = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark else ""
        raise InputFileError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InputFileError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return file, value


def _refuse_repeated_keys(file: YamlFile, node: yaml.Node | None) -> None:
    """YAML keeps the last of a key given twice, silently: refused instead."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                raise InputFileError(f"{file.path}, line {key.start_mark.line + 1}: "
                                     f"{key.value!r} is given twice")
            seen.add(getattr(key, "value", ""))
            _refuse_repeated_keys(file, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(file, item)


def validated(file: YamlFile, value: Any, schema: type[M],
              context: dict[str, Any] | None = None) -> M:
    """value (read from file) as the schema's model; InputFileError names the
    line of the first fault."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(value, context=context)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc: Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            raise InputFileError(file.fault(loc, _unknown_key(schema, loc))) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "missing"):
            message += f" (it is {error['input']!r})"
        raise InputFileError(file.fault(loc, message)) from None


def _unknown_key(schema: type[BaseModel], loc: Loc) -> str:
    """An unknown key: which keys are known there, and the likely one it meant."""
    from pydantic import BaseModel

    model: Any = schema
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            model = None
            break
        model = annotation
    known = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
    near = difflib.get_close_matches(str(loc[-1]), known, n=1)
    said = f"unknown key {str(loc[-1])!r}"
    if near:
        said += f" (did you mean {near[0]!r}?)"
    return said + (f"; the keys here are {', '.join(known)}" if known else "")
