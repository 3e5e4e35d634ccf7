"""Named registries: the single source of what exists (filters, tasks, launchers, rewriters).

A registry maps a name to an entry. Entries that take settings declare them as a small pydantic model
(`Settings`), so the run configuration validates a method's name *and* its settings against the registry,
and docs, tests and the KFP UI help text are generated from it.

Plugins: a module that registers entries can be loaded in every process (the CLI, each pipeline task) by
  - an installed package's entry point in the group ``damoc.plugins``, or
  - the environment variable ``DAMOC_PLUGINS`` (comma-separated module names, importable on sys.path).
Plugins are code: they are loaded from the environment/image, never from a run configuration.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")
PLUGIN_GROUP = "damoc.plugins"
PLUGIN_ENV = "DAMOC_PLUGINS"


class NoSettings(BaseModel):
    """Settings model of an entry that takes none (any key is an error)."""

    model_config = ConfigDict(extra="forbid")


class SettingsModel(BaseModel):
    """Base for an entry's own settings: unknown keys are errors; give every field a description (docs, UI)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RegistryError(ValueError):
    """An unknown name, or settings that do not fit the named entry."""


class Registry(Generic[T]):
    """name -> entry; `kind` names what it holds in error messages ("filtering method", "task", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r}: use letters, digits, '_' or '-'")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}") \
                from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


def settings_model(entry: Any) -> type[BaseModel]:
    """The settings model an entry declares (`Settings` attribute), or `NoSettings`."""
    model = getattr(entry, "Settings", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else NoSettings


def validate_settings(entry: Any, raw: dict[str, Any] | None, where: str) -> BaseModel:
    """Validate `raw` against the entry's settings model; errors name `where.key`."""
    model = settings_model(entry)
    try:
        return model.model_validate(raw or {})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}.{key}: {msg}" if key else f"{where}: {msg}")
        raise RegistryError("; ".join(problems)) from None


_plugins_loaded = False


def load_plugins(force: bool = False) -> list[str]:
    """Import plugin modules once per process (entry points, then $DAMOC_PLUGINS); returns their names."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return []
    _plugins_loaded = True
    loaded: list[str] = []
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()
        loaded.append(ep.value)
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(f"{PLUGIN_ENV}: cannot import plugin module {name!r}: {err}") from None
        loaded.append(name)
    return loaded
