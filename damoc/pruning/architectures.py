"""Where the decoder layers of each model family live: found generically, or described as data (JSON).

Every causal LM is pruned: `spec_for_model` reads the block list, layer-count key and KV-cache index attributes
off the model itself (damoc.pruning.discovery) and checks that hidden states flow block to block. A JSON file
`architectures/<model_type>.json` overrides discovery for a family whose structure it cannot see (or to pin
what the file says: the built-in files describe families discovery also finds, and a test keeps both equal).
Keys:
  model_type              config.model_type the file describes
  layers_path             dotted attribute path of the decoder-layer ModuleList ("model.layers", "transformer.h")
  layer_prefix            state-dict prefix of layer i, with "{index}" for i (default: layers_path + ".{index}.")
  num_layers_key          config attribute holding the layer count ("num_hidden_layers", "n_layer")
  per_layer_config_lists  config lists with one entry per layer, trimmed when layers are dropped ("layer_types")
  layer_index_attrs       attributes, relative to a layer, holding its index for KV caching ("self_attn.layer_idx");
                          renumbered after dropping. Paths missing on a layer are skipped, but at least one must exist.
  index_dependent_flags   config flags that, when truthy, make a layer's computation depend on its index
                          (renumbering then changes the model's function; pruning warns)
  requires_remote_code    true when transformers has no class for the family and the checkpoint's own code
                          (trust_remote_code) is needed (InternLM2, Phi-3-small)
  architectures, notes    documentation: the CausalLM class names and which checkpoints the file covers

Families that reuse another family's model_type need no file: Yi / Yi-1.5 say model_type "llama", Qwen2.5 says
"qwen2". `check_architecture` answers "can this checkpoint be pruned?" from config.json alone (no weights, no
remote code executed; discovery runs on a meta-device model), so a run can reject an unsupported candidate in
seconds.
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
    requires_remote_code: bool = False
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
    if not isinstance(data.get("requires_remote_code", False), bool):
        raise ValueError(f"{source}: requires_remote_code must be true or false")
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


def _unsupported_message(model_type: Any, specs: dict[str, ArchitectureSpec], remote_code: bool = False) -> str:
    remote = sorted(t for t, spec in specs.items() if spec.requires_remote_code)
    message = (f"layer pruning cannot find the decoder blocks of model_type '{model_type}' generically. Described "
               f"in JSON: {', '.join(sorted(specs))} ({', '.join(remote)} need trust_remote_code: true); every "
               "family transformers ships a causal LM for is discovered. Yi uses model_type llama, Qwen2.5 qwen2. ")
    if remote_code:
        message += ("This checkpoint ships its own modeling code (auto_map in config.json): even once described, "
                    "it needs trust_remote_code: true. ")
    return message + (f"To add it, write {_builtin_dir()}/{model_type}.json (copy llama.json and set layers_path, "
                      "num_layers_key, per_layer_config_lists and layer_index_attrs for that family).")


def spec_for(config: Any, extra_dirs: list[str | Path] | None = None) -> ArchitectureSpec:
    """The JSON architecture spec for a transformers config (matched on `config.model_type`); a loaded model
    without one is described by `spec_for_model` instead."""
    model_type = getattr(config, "model_type", None)
    specs = load_specs(extra_dirs)
    if model_type not in specs:
        raise UnsupportedArchitectureError(_unsupported_message(model_type, specs,
                                                                bool(getattr(config, "auto_map", None))))
    return specs[model_type]


def spec_for_model(model: nn.Module, extra_dirs: list[str | Path] | None = None,
                   check_flow: bool = True) -> ArchitectureSpec:
    """The spec of a loaded model: its family's JSON file when there is one (an override), else discovered from
    the model (damoc.pruning.discovery), with the hidden-state flow checked on one short forward pass unless
    `check_flow` is false or the model has no real weights (meta device)."""
    specs = load_specs(extra_dirs)
    model_type = getattr(model.config, "model_type", None)
    if model_type in specs:
        return specs[model_type]
    from damoc.pruning import discovery

    spec = discovery.discover_spec(model)
    if check_flow and not any(p.is_meta for p in model.parameters()):
        discovery.check_flow(model, spec)
    return spec


def read_config_dict(path: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint as a plain dict: a local directory, an s3:// prefix (only that one object is
    read) or a hub id (the local hub cache; offline-safe). Never imports or runs the checkpoint's own code."""
    source = str(path)
    if source.startswith("s3://"):
        from damoc import storage

        return json.loads(storage.read_text(source.rstrip("/") + "/config.json"))
    local = Path(source.removeprefix("file://")).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{local} has no config.json: not a transformers checkpoint")
        return json.loads(config_file.read_text(encoding="utf-8"))
    from transformers import PretrainedConfig

    config_dict, _ = PretrainedConfig.get_config_dict(source)
    return config_dict


def check_architecture(path: str | Path, trust_remote_code: bool = False,
                       extra_dirs: list[str | Path] | None = None) -> None:
    """Raise UnsupportedArchitectureError unless the checkpoint at `path` can be layer-pruned.

    Reads config.json only (seconds, no weights, no remote code run): its model_type must have a spec, that
    spec's layer-count key must be an integer in the config, and a family whose code is not in transformers
    must be allowed to run its own (trust_remote_code). The message lists the supported model types.
    """
    try:
        config = read_config_dict(path)
    except (OSError, ValueError) as err:
        raise UnsupportedArchitectureError(f"cannot read config.json of {path}: {err}") from err
    specs = load_specs(extra_dirs)
    model_type = config.get("model_type")
    if model_type not in specs:
        _check_generic(path, config, trust_remote_code, specs)
        return
    spec = specs[model_type]
    if spec.requires_remote_code and not trust_remote_code:
        raise UnsupportedArchitectureError(
            f"{path}: model_type '{model_type}' has no class in transformers; its checkpoint ships its own "
            "modeling code, so the candidate needs trust_remote_code: true (review that code first)")
    layers = config.get(spec.num_layers_key)
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise UnsupportedArchitectureError(f"{path}: config.json of model_type '{model_type}' has no positive "
                                           f"integer '{spec.num_layers_key}' (got {layers!r})")


def _check_generic(path: str | Path, config: dict[str, Any], trust_remote_code: bool,
                   specs: dict[str, ArchitectureSpec]) -> None:
    """A family without a JSON file: discovery on a meta-device model built from config.json (no weights). A
    checkpoint with its own modeling code is only checked once it may run (trust_remote_code), at pruning time."""
    from damoc.pruning import discovery

    model_type = config.get("model_type")
    if config.get("auto_map"):
        if not trust_remote_code:
            raise UnsupportedArchitectureError(f"{path}: " + _unsupported_message(model_type, specs, True))
        return  # its structure is only visible by running its code: pruning discovers it (or flags it)
    try:
        model = discovery.meta_model(discovery.config_from_dict(config))
    except (KeyError, ValueError, TypeError):  # an unknown model_type, or no AutoModelForCausalLM class for it
        raise UnsupportedArchitectureError(
            f"{path}: transformers has no causal-LM class for model_type '{model_type}'. "
            + _unsupported_message(model_type, specs)) from None
    try:
        discovery.discover_spec(model)
    except UnsupportedArchitectureError as err:
        raise UnsupportedArchitectureError(f"{path}: {err}") from None
