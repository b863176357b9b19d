"""Reading a config file's YAML strictly: every mistake is one InvalidConfig line naming the file and the key.

Both loaders (config/settings.py, config/hosts.py) read through `read_yaml`, which refuses what
PyYAML would take silently or die on with a traceback: bytes that are not UTF-8, a key given
twice in one mapping (the second would silently replace the first), nesting deeper than
MAX_DEPTH (PyYAML recurses per level), aliases that expand past MAX_NODES (a 518-byte "billion
laughs" file expands to millions of values once converted or encoded), and non-finite numbers
(`.inf`, `.nan`), which no setting means.

Files are parsed by libyaml's C parser where PyYAML was built with it (its wheels are): PyYAML's
pure-Python scanner costs ~1 ms a host. The pure loader stays the reference: a file the C parser
refuses is read again by the pure loader, so the refusal (its wording, line and key) is the same as
on a machine without libyaml. Only libyaml's own nesting limit (1000 levels, far past MAX_DEPTH) is
answered directly: re-reading that depth would cost the pure scanner, quadratic in depth, seconds.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import yaml

from eventbus.errors import InvalidConfig

MAX_DEPTH = 32  # levels of nesting any rr file needs: a handful
MAX_NODES = 200_000  # values after alias expansion: an 8000-host file is ~100k
LIBYAML_MAX_DEPTH = 1000  # libyaml's own nesting limit, which the pure loader keeps too
LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"  # the problem of libyaml's ScannerError past it


class _RefuseDuplicateKeys(yaml.constructor.SafeConstructor):
    """SafeConstructor that refuses a key given twice in one mapping (under either parser)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader's own construct_mapping reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key `{key}` (a second entry would silently replace the first)",
                    key_node.start_mark)
            seen.add(key)
        mapping: dict[object, object] = super().construct_mapping(node, deep=deep)
        return mapping


class _StrictLoader(_RefuseDuplicateKeys, yaml.SafeLoader):
    """The pure-Python parser: the reference for what is accepted and what each refusal says.

    It composes no deeper than `_check_shape` needs: deeper than MAX_DEPTH + 1 levels each node
    is skipped (replaced by an empty scalar), so the shape check refuses the same node by the same key
    as under libyaml instead of Python's recursion limit ending it without one, and past libyaml's
    own limit it gives up as libyaml does.
    """

    _depth = 0  # levels being composed above the next node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth > MAX_DEPTH:
            return self._skip_node()
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _skip_node(self) -> yaml.Node:
        """Consume one node's events; anchors in it refer to the empty scalar that stands for it."""
        placeholder = yaml.ScalarNode("tag:yaml.org,2002:null", "", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        open_collections = 0
        while True:
            event = self.get_event()  # type: ignore[no-untyped-call]
            if getattr(event, "anchor", None) is not None:
                self.anchors[event.anchor] = placeholder
            if isinstance(event, yaml.CollectionStartEvent):
                open_collections += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                open_collections -= 1
            if open_collections == 0:
                return placeholder
            if self._depth + open_collections > LIBYAML_MAX_DEPTH:
                raise RecursionError  # answered as libyaml's limit is: nested too deeply


# None where PyYAML was built without libyaml; tests set it to None to act as such a machine.
FAST_LOADER: type[yaml.CSafeLoader] | None = None
if yaml.__with_libyaml__:
    class _StrictCLoader(_RefuseDuplicateKeys, yaml.CSafeLoader):
        """libyaml's C scanner, parser and composer under the same safe, duplicate-refusing constructor."""

    FAST_LOADER = _StrictCLoader



def read_yaml(path: Path, what: str) -> object:
    """The file's YAML as plain data ({} for an empty file); InvalidConfig naming the file and key otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfig(f"{path}: not UTF-8 text (byte {exc.start}): save the {what} as UTF-8") from None
    try:
        data = _parse_with_reference_errors(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidConfig(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    _check_numbers(path, data)
    return data


def _parse_with_reference_errors(path: Path, text: str) -> object:
    """Parsed by FAST_LOADER where there is one; a scanning or composing error is the pure loader's own."""
    if FAST_LOADER is None:
        return _parse(path, text, _StrictLoader)
    try:
        return _parse(path, text, FAST_LOADER)
    except yaml.constructor.ConstructorError:
        raise  # raised by the Python constructor both loaders share: already the pure loader's text
    except yaml.YAMLError as exc:
        if getattr(exc, "problem", None) == LIBYAML_TOO_DEEP:
            raise _too_deep(path) from None
        return _parse(path, text, _StrictLoader)  # its refusal (or, should the two ever differ, its data)


def _parse(path: Path, text: str, loader_class: type[yaml.SafeLoader] | type[yaml.CSafeLoader]) -> object:
    """The document as plain data ({} when empty), its shape checked before it is constructed."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_shape(path, node)
        return loader.construct_document(node)
    except RecursionError:  # the pure composer recurses per level
        raise _too_deep(path) from None
    finally:
        loader.dispose()


def _too_deep(path: Path) -> InvalidConfig:
    return InvalidConfig(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)")


def _check_shape(path: Path, root: yaml.Node) -> None:
    """Depth and expanded size of the composed document, without expanding it (shared nodes counted once each time used)."""
    expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    stack: list[tuple[yaml.Node, int, str, bool]] = [(root, 1, "", False)]
    while stack:
        node, depth, key, done = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidConfig(f"{path}: {key or '(top level)'}: nested more than {MAX_DEPTH} levels deep")
        children = _children(node, key)
        if done or not children:
            expanded[id(node)] = 1 + sum(expanded[id(child)] for child, _ in children)
            if expanded[id(node)] > MAX_NODES:
                raise InvalidConfig(f"{path}: {key or '(top level)'}: expands to more than {MAX_NODES} values "
                                    "(aliases referring to aliases?); write the values out")
            continue
        stack.append((node, depth, key, True))
        stack.extend((child, depth + 1, child_key, False) for child, child_key in children if id(child) not in expanded)


def _children(node: yaml.Node, key: str) -> list[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[yaml.Node, str]] = []
        for k, v in node.value:
            name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
            out += [(k, key), (v, f"{key}.{name}" if key else name)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
    return []


def _check_numbers(path: Path, data: object) -> None:
    """Refuse `.inf` and `.nan` anywhere, naming the key (the shape is bounded by now)."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, key = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidConfig(f"{path}: {key or '(top level)'}: {value} is not a finite number")
        if isinstance(value, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{key}[{i}]") for i, v in enumerate(value))
