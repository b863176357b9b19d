"""The event catalogue is one package of domain modules; importers still see one flat namespace.

`from eventbus.events import X` must keep working for every public name any of its modules
declares, and every event type a domain module declares must be in the union that decoding
accepts: a type declared but left out of `registry.AnyEvent` would be refused as unknown by
every reader.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import get_args

import msgspec

import eventbus.events as events
from eventbus.events import EVENT_TYPES, AnyEvent, Event, decode, encode
from tests.event_samples import all_samples


def _modules() -> list[ModuleType]:
    return [importlib.import_module(f"{events.__name__}.{info.name}") for info in pkgutil.iter_modules(events.__path__)]


def _declared(module: ModuleType) -> set[str]:
    """The public names a module defines itself at its top level (not those it imports)."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_the_package_has_one_module_per_domain_and_every_event_in_one_of_them() -> None:
    names = {module.__name__.rpartition(".")[2] for module in _modules()}
    assert {"bounds", "base", "registry", "codec", "leadership", "membership", "work", "results", "models", "data"} <= names
    homes = {kind.__module__ for kind in EVENT_TYPES.values()}
    assert events.__name__ not in homes and "eventbus.events.registry" not in homes and "eventbus.events.base" not in homes


def test_every_public_name_of_every_module_is_importable_from_the_package() -> None:
    missing = [
        f"{module.__name__}.{name}"
        for module in _modules()
        for name in sorted(_declared(module))
        if getattr(events, name, None) is not getattr(module, name)
    ]
    assert not missing, f"re-export these from eventbus/events/__init__.py (and list them in __all__): {missing}"
    assert sorted(events.__all__) == sorted({name for module in _modules() for name in _declared(module)})


def test_every_event_type_a_module_declares_is_in_the_union() -> None:
    declared = {
        value
        for module in _modules()
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Event) and value is not Event and value.__module__ == module.__name__
    }
    listed = set(get_args(AnyEvent))
    assert declared - listed == set(), f"add them to AnyEvent in eventbus/events/registry.py: {sorted(k.__name__ for k in declared - listed)}"
    assert listed == declared == set(EVENT_TYPES.values())


def test_value_objects_live_beside_the_events_that_carry_them() -> None:
    from eventbus.events import ArtifactRef, AttemptOutcome, BatchInput, ConfigChange, GpuInfo, HostResources

    for kind in (ArtifactRef, AttemptOutcome, BatchInput, ConfigChange, GpuInfo, HostResources):
        assert issubclass(kind, msgspec.Struct) and not issubclass(kind, Event)
    assert HostResources.__module__ == GpuInfo.__module__ == events.HostOnline.__module__
    assert ConfigChange.__module__ == events.ConfigChanged.__module__


def test_every_sample_round_trips_through_the_package_byte_for_byte() -> None:
    for event in all_samples():
        data = encode(event)
        assert decode(data) == event
        assert encode(decode(data)) == data
