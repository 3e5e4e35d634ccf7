"""The deployment settings the Helm chart publishes in its `damoc-defaults` ConfigMap, and who reads them.

One table: the chart's ConfigMap has exactly these keys (tests/test_deploy_settings.py renders it), the
pipeline loads each into the tasks named here (kfp-kubernetes use_config_map_as_env, optional: a cluster
without the chart runs on the code's defaults), and each is read by the code named here (the test finds the
`os.environ` read). A key nobody reads, or a variable read in a task that no key feeds, fails that test.
"""
from __future__ import annotations

from dataclasses import dataclass

CONFIG_MAP_NAME = "damoc-defaults"


@dataclass(frozen=True)
class Setting:
    tasks: tuple[str, ...]  # pipeline task names (damoc_pipelines.damoc_pipeline) that load it
    reader: str  # the module that reads it from the environment
    meaning: str


_TRAIN = ("finetune-model",)
_ENDPOINT = ("filter-data", "compress-data")

CONFIG_MAP_SETTINGS: dict[str, Setting] = {
    "DAMOC_TRAINING_IMAGE": Setting(_TRAIN, "damoc/training/launchers.py",
                                    "image of the training pods a cluster launcher starts (chart trainImage)"),
    "DAMOC_TRAINING_SERVICE_ACCOUNT": Setting(_TRAIN, "damoc/training/launchers.py",
                                              "their ServiceAccount (the chart's runner account)"),
    "DAMOC_TRAINING_SECRET": Setting(_TRAIN, "damoc/training/launchers.py",
                                     "Secret with their S3 credentials (the chart's object-store Secret)"),
    "DAMOC_TRAINING_SECRET_KEYS": Setting(_TRAIN, "damoc/training/launchers.py",
                                          "the access and secret key's names in that Secret, comma-separated "
                                          "(accesskey,secretkey for KFP's own object store)"),
    "DAMOC_TRAINING_STAGING_URI": Setting(_TRAIN, "damoc/training/launchers.py",
                                          "s3:// prefix where launcher jobs exchange models and rows"),
    "DAMOC_GPU_RESOURCE": Setting(_TRAIN, "damoc/training/launchers.py",
                                  "extended resource name of a GPU on the training pods (chart gpu.resourceName)"),
    "DAMOC_GPU_NODE_SELECTOR": Setting(_TRAIN, "damoc/training/launchers.py",
                                       "nodeSelector of the training pods, JSON (chart gpu.nodeSelector)"),
    "DAMOC_GPU_TOLERATIONS": Setting(_TRAIN, "damoc/training/launchers.py",
                                     "tolerations of the training pods, JSON (chart gpu.tolerations)"),
    "DAMOC_REWRITER_URL": Setting(_ENDPOINT, "damoc/compression/rewriters.py",
                                  "the chart's rewriter Service (OpenAI-compatible /v1)"),
    "DAMOC_REWRITER_MODEL": Setting(_ENDPOINT, "damoc/compression/rewriters.py",
                                    "the model name that Service serves"),
}


def keys_for_task(task: str) -> dict[str, str]:
    """{ConfigMap key: environment variable} for one pipeline task."""
    return {key: key for key, s in CONFIG_MAP_SETTINGS.items() if task in s.tasks}
