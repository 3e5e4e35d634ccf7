"""Container images of the DaMoC components, one setting per task family.

- component image (docker/Dockerfile, torch from the CPU wheel index): validation, data stages, pruning,
  ranking. `DAMOC_IMAGE` at compile time overrides the default.
- training image (docker/Dockerfile.train, CUDA torch, DeepSpeed, PEFT): the GPU tasks, fine-tune and
  evaluate (the in-process launcher trains inside the fine-tune task). `DAMOC_TRAINING_IMAGE` at compile
  time overrides the default; the training launchers read the same variable for the pods they start.

The committed compiled pipeline uses the defaults; `damoc compile` reads the variables, and
`damoc upload --image-component/--image-training` rewrites a compiled package per family
(damoc.cluster.pipeline_images) so a platform team never needs to recompile for a registry mirror.
"""
import os

DEFAULT_IMAGE = "ghcr.io/damoc-project/damoc:0.1.0"
DEFAULT_TRAINING_IMAGE = "ghcr.io/damoc-project/damoc-train:0.1.0"
DAMOC_IMAGE = os.environ.get("DAMOC_IMAGE") or DEFAULT_IMAGE
TRAINING_IMAGE = os.environ.get("DAMOC_TRAINING_IMAGE") or DEFAULT_TRAINING_IMAGE
