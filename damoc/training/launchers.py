"""The registry of training launchers: where and how a candidate's fine-tuning job runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from damoc.registry import Registry

TrainFn = Callable[..., dict[str, Any]]
"""(model_path, samples, out_dir, training_config, *, trust_remote_code, progress) -> training statistics"""


@dataclass(frozen=True)
class Launcher:
    name: str
    description: str
    train: TrainFn


LAUNCHERS: Registry[Launcher] = Registry("training launcher")


def _in_process(model_path: str | Path, samples: Sequence, out_dir: str | Path, settings: Any, *,
                trust_remote_code: bool = False, progress: bool = False) -> dict[str, Any]:
    from damoc.training.finetune import finetune  # torch is imported only when training actually runs

    return finetune(model_path, samples, out_dir, settings, trust_remote_code=trust_remote_code, progress=progress)


LAUNCHERS.register("in_process", Launcher(
    "in_process", "HF Trainer inside the pipeline task's own process (laptop, CI, one device)", _in_process))
