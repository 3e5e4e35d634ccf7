"""Data stages: load+validate, filter, compress. Thin wrappers over damoc.workflow.data_steps."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import DAMOC_IMAGE


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def prepare_data(config: Input[Artifact], train: Output[Dataset], eval_set: Output[Dataset]) -> str:
    import json
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.data_steps import prepare_data as step

    stats = step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path), Path(eval_set.path))
    train.metadata.update({"samples": stats["train_samples"]})
    eval_set.metadata.update({"samples": stats["eval_samples"]})
    return json.dumps(stats)


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def filter_data(config: Input[Artifact], train: Input[Dataset], selected: Output[Dataset]) -> str:
    import json
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.data_steps import filter_step

    stats = filter_step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path), Path(selected.path))
    selected.metadata.update({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
    return json.dumps(stats)


@dsl.component(base_image=DAMOC_IMAGE, install_kfp_package=False)
def compress_data(config: Input[Artifact], train: Input[Dataset], compressed: Output[Dataset]) -> str:
    import json
    from pathlib import Path

    from damoc.config import RunConfig
    from damoc.workflow.data_steps import compress_step

    stats = compress_step(RunConfig.model_validate_json(Path(config.path).read_text()), Path(train.path), Path(compressed.path))
    compressed.metadata.update({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
    return json.dumps(stats)
