"""Where the decoder layers of each model family live, described as data (one JSON file per `model_type`).

Adding a family means adding `architectures/<model_type>.json`; no code changes. Keys:
  model_type              config.model_type the file describes
  layers_path             dotted attribute path of the decoder-layer ModuleList ("model.layers", "transformer.h")
  layer_prefix            state-dict prefix of layer i, with "{index}" for i (default: layers_path + ".{index}.")
  num_layers_key          config attribute holding the layer count ("num_hidden_layers", "n_layer")
  per_layer_config_lists  config lists with one entry per layer, trimmed when layers are dropped ("layer_types")
  layer_index_attrs       attributes, relative to a layer, holding its index for KV caching ("self_attn.layer_idx");
                          renumbered after dropping. Paths missing on a layer are skipped, but at least one must exist.
  index_dependent_flags   config flags that, when truthy, make a layer's computation depend on its index
                          (renumbering then changes the model's function; pruning warns)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

_REQUIRED = ("model_type", "layers_path", "num_layers_key", "layer_index_attrs")


class UnsupportedArchitectureError(ValueError):
    """The model family has no architecture description."""


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str
    layers_path: str
    num_layers_key: str
    layer_index_attrs: tuple[str, ...]
    layer_prefix: str = ""
    per_layer_config_lists: tuple[str, ...] = ()
    index_dependent_flags: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    notes: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.layer_prefix:
            object.__setattr__(self, "layer_prefix", self.layers_path + ".{index}.")
        if "{index}" not in self.layer_prefix:
            raise ValueError(f"{self.source or self.model_type}: layer_prefix must contain '{{index}}'")

    def prefix(self, index: int) -> str:
        """State-dict key prefix of decoder layer `index` (ends with a dot)."""
        return self.layer_prefix.format(index=index)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder-layer ModuleList of `model`."""
        obj: Any = model
        for part in self.layers_path.split("."):
            if not hasattr(obj, part):
                raise AttributeError(f"{type(model).__name__} has no '{self.layers_path}' "
                                     f"(architecture spec {self.source or self.model_type})")
            obj = getattr(obj, part)
        if not isinstance(obj, nn.ModuleList):
            raise TypeError(f"'{self.layers_path}' of {type(model).__name__} is {type(obj).__name__}, "
                            "expected nn.ModuleList")
        return obj

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent_path, _, name = self.layers_path.rpartition(".")
        parent: Any = model
        for part in filter(None, parent_path.split(".")):
            parent = getattr(parent, part)
        setattr(parent, name, layers)

    def num_layers(self, config: Any) -> int:
        value = getattr(config, self.num_layers_key, None)
        if not isinstance(value, int):
            raise ValueError(f"config of {self.model_type} has no integer '{self.num_layers_key}'")
        return value


def _from_dict(data: dict[str, Any], source: str) -> ArchitectureSpec:
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ValueError(f"{source}: architecture description lacks {missing}")
    known = set(ArchitectureSpec.__dataclass_fields__) - {"source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; allowed: {sorted(known)}")
    tuples = {key: tuple(data[key]) for key in ("layer_index_attrs", "per_layer_config_lists",
                                                "index_dependent_flags", "architectures") if key in data}
    return ArchitectureSpec(**{**data, **tuples}, source=source)


def _builtin_dir() -> Path:
    return Path(str(resources.files("damoc.pruning").joinpath("architectures")))


def _load_dir(directory: str) -> dict[str, ArchitectureSpec]:
    specs: dict[str, ArchitectureSpec] = {}
    for path in sorted(Path(directory).glob("*.json")):
        spec = _from_dict(json.loads(path.read_text()), str(path))
        if spec.model_type in specs:
            raise ValueError(f"{path}: model_type '{spec.model_type}' is already described in "
                             f"{specs[spec.model_type].source}")
        specs[spec.model_type] = spec
    return specs


@lru_cache(maxsize=1)
def _builtin_specs() -> dict[str, ArchitectureSpec]:
    return _load_dir(str(_builtin_dir()))


def load_specs(extra_dirs: list[str | Path] | None = None) -> dict[str, ArchitectureSpec]:
    """All known specs by model_type; files in `extra_dirs` override the built-in ones."""
    specs = dict(_builtin_specs())
    for directory in extra_dirs or []:
        specs.update(_load_dir(str(Path(directory).resolve())))
    return specs


def supported_model_types(extra_dirs: list[str | Path] | None = None) -> list[str]:
    return sorted(load_specs(extra_dirs))


def spec_for(config: Any, extra_dirs: list[str | Path] | None = None) -> ArchitectureSpec:
    """The architecture spec for a transformers config (matched on `config.model_type`)."""
    model_type = getattr(config, "model_type", None)
    specs = load_specs(extra_dirs)
    if model_type not in specs:
        raise UnsupportedArchitectureError(
            f"layer pruning does not know model_type '{model_type}'. Supported: {', '.join(sorted(specs))}. "
            f"To add it, write {_builtin_dir()}/{model_type}.json (copy llama.json and set layers_path, "
            "num_layers_key, per_layer_config_lists and layer_index_attrs for that family).")
    return specs[model_type]
