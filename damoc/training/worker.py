"""The training entry point of every process a launcher starts: ``python -m damoc.training.worker ...``.

``torchrun --nproc_per_node N -m damoc.training.worker --model M --samples S --settings C --out O --stats T``
(the ``torchrun`` launcher, one pod) and the PyTorchJob's containers (the ``pytorchjob`` launcher, several nodes;
the operator's ``PET_*`` variables configure torchrun) both run it. Every process trains (torchrun's
``WORLD_SIZE``/``RANK`` make :func:`damoc.training.finetune.finetune` distributed); rank 0 writes the model to
``--out`` and the statistics (JSON) to ``--stats``.

Inputs and outputs may be local paths or ``s3://`` URIs (a PyTorchJob's pods do not see the launching task's
disk): URIs are downloaded into ``--workdir`` (default: a temporary folder) and the results uploaded by rank 0.
S3 endpoint and credentials come from the environment only (``damoc.storage``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m damoc.training.worker", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint directory (local or s3:// prefix)")
    p.add_argument("--samples", required=True, help="training samples, JSONL (damoc.data.records)")
    p.add_argument("--settings", required=True, help="TrainingConfig as JSON")
    p.add_argument("--out", required=True, help="where the trained checkpoint goes (local dir or s3:// prefix)")
    p.add_argument("--stats", required=True, help="where the statistics JSON goes (local file or s3:// key)")
    p.add_argument("--workdir", default=None, help="local scratch for downloads and a remote --out")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from damoc import atomic, storage
    from damoc.config import TrainingConfig
    from damoc.data.records import read_samples
    from damoc.training.finetune import dist_world, finetune

    a = _parser().parse_args(argv)
    world, rank = dist_world()
    local_rank = os.environ.get("LOCAL_RANK", "0")
    remote = any(storage.is_s3(x) for x in (a.model, a.samples, a.settings, a.out, a.stats))
    workdir = Path(a.workdir) if a.workdir else (Path(tempfile.gettempdir()) / "damoc-worker" if remote else None)
    if workdir is not None:
        # One download cache per local process: ranks on one node do not race on the same files.
        cache = workdir / f"inputs-{local_rank}"
    else:
        cache = None
    settings = TrainingConfig.model_validate_json(storage.read_text(a.settings))
    model = storage.localize(a.model, cache) if storage.is_s3(a.model) else Path(a.model)
    samples = read_samples(storage.localize(a.samples, cache) if storage.is_s3(a.samples) else a.samples)
    out = (workdir / "out" / "model") if storage.is_s3(a.out) else Path(a.out)
    # model_id: the URI, the same on every rank and pod (the download path is per local rank), so every rank
    # and a restarted pod find the same checkpoints (training.checkpoint_uri).
    stats = finetune(model, samples, out, settings, trust_remote_code=a.trust_remote_code, progress=a.progress,
                     model_id=a.model)
    if rank == 0:
        stats["processes"] = world
        if storage.is_s3(a.out):
            storage.publish(out, a.out)
        text = json.dumps(stats, indent=2, sort_keys=True)
        if storage.is_s3(a.stats):
            storage.write_text(a.stats, text)
        else:
            atomic.write_text(a.stats, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
