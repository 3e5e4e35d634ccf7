"""The run configuration: one YAML file describes a DaMoC (or grid-search) run.

This schema is the single definition of every run setting: its type, default, bounds and description.
The KFP pipeline parameters, their UI help text, the README's config table and `--set` all derive from it
(damoc.config_params, damoc.config_doc). Method names and method settings are checked against the registries
(damoc.registry). A bad config fails here, before any work starts, with the key and what is wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the file, key and fix."""


def did_you_mean(value: str, choices: Any) -> str:
    """' (did you mean X?)' for a near miss among `choices` (difflib), else ''."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` is bad input, not a run that dies in serialisation.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _registered(registry_module: str, registry_name: str, value: str) -> str:
    """Validate a method name against its registry (imported lazily: registries pull in their modules)."""
    import importlib

    registry = getattr(importlib.import_module(registry_module), registry_name)
    if value not in registry:
        raise ValueError(f"unknown {registry.kind} '{value}'{did_you_mean(value, registry.names())}; "
                         f"available: {', '.join(registry.names())}")
    return value


def _method_options(registry_module: str, registry_name: str, kind: str, options: dict[str, dict[str, Any]],
                    chosen: str | None) -> dict[str, dict[str, Any]]:
    """Each named method's settings validated against its registry entry, the chosen method's defaults filled in."""
    import importlib

    from damoc.registry import validate_settings

    registry = getattr(importlib.import_module(registry_module), registry_name)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(options) | ({chosen} if chosen else set())):
        if name not in registry:
            raise ValueError(f"'{name}' is not a {kind}{did_you_mean(name, registry.names())}; "
                             f"available: {', '.join(registry.names())}")
        out[name] = validate_settings(registry.get(name), options.get(name), name).model_dump(mode="json",
                                                                                           by_alias=True)
    return out


class FieldMapping(_Section):
    """Which column of the data holds each part of a sample."""

    instruction: str = Field("instruction", description="column with the task instruction; empty (or null) if none")
    input: str = Field("input", description="column with the question / input (and context)")
    output: str = Field("output", description="column with the reference answer")
    options: str = Field("", description="column with the answer options of multiple-choice rows (a list or a "
                         "JSON list string; the reference is one of them); empty: none")

    @field_validator("instruction", mode="before")
    @classmethod
    def _no_instruction(cls, value: Any) -> Any:
        return "" if value is None else value


class DataConfig(_Section):
    """Where the domain data comes from and what kind of task it is."""

    train: str = Field(..., description="training data: local path or s3://bucket/key (.jsonl, .csv, .parquet)")
    eval: str = Field(..., description="evaluation data: local path or s3:// URI, same format rules")
    task: str = Field("qa_long", description="task type (decides the metric); registered: see damoc.evaluation.tasks")
    fields: FieldMapping = Field(FieldMapping(), description="source column of each sample part")
    max_train_samples: int | None = Field(None, ge=1, description="read only the first N training rows (null: all)")
    max_eval_samples: int | None = Field(None, ge=1, description="read only the first N evaluation rows (null: all)")

    @field_validator("train", "eval")
    @classmethod
    def _supported_format(cls, uri: str) -> str:
        from damoc.data.io import SUPPORTED_SUFFIXES, data_format

        if data_format(uri) is None:
            raise ValueError(f"'{uri}' has no supported suffix; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        return uri

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return _registered("damoc.evaluation.tasks", "TASKS", value)


class Candidate(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(@(full|lora))?$",
                      description="unique short name (letters, digits, . _ -); a '@full' / '@lora' suffix only "
                      "together with the same training_method (training.method: both writes these itself)")
    path: str = Field(..., description="chat/instruct checkpoint: local dir, s3:// prefix, or hub id")
    base_path: str | None = Field(None, description="its base checkpoint; enables pruning with sparse merging")
    trust_remote_code: bool = Field(False, description="allow the checkpoint's own Python code (opt-in)")
    training_method: Literal["full", "lora"] | None = Field(
        None, description="this candidate's fine-tuning method, overriding training.method; set on the "
        "'<name>@full' / '<name>@lora' variants that training.method: both expands each candidate into")

    @model_validator(mode="after")
    def _suffix_matches_method(self) -> "Candidate":
        from damoc.training.methods import split_variant

        _, suffix = split_variant(self.name)
        if suffix is not None and suffix != self.training_method:
            raise ValueError(f"name '{self.name}' ends in '@{suffix}' but training_method is "
                             f"{self.training_method!r}; give training_method: {suffix} or drop the suffix")
        return self

    @property
    def model_name(self) -> str:
        """The model this candidate trains: its name without the '@full' / '@lora' method suffix."""
        from damoc.training.methods import split_variant

        return split_variant(self.name)[0]


class FilterConfig(_Section):
    """Stage 1: keep a fraction of the training samples with a registered filtering method."""

    method: str = Field("graphcut", description="filtering method; registered: see damoc.filtering")
    ratio: float = Field(0.2, gt=0.0, le=1.0, description="fraction of training samples kept")
    embedding_model: str | None = Field(None, description="sentence-transformers dir for methods that embed; "
                                        "null: all-MiniLM-L6-v2 (shipped offline)")
    seed: int = Field(0, description="seed for methods that sample")
    embed: Literal["whole", "qa_separate"] = Field(
        "whole", description="what distribution-aware methods embed: the whole sample, or question and answer "
        "separately (combined), so long answers are not lost behind a long question")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, validate_default=True, description="each method's own settings, as options.METHOD.KEY; the chosen "
        "method's defaults are filled in")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered("damoc.filtering", "FILTERS", value)

    @field_validator("options")
    @classmethod
    def _method_settings(cls, options: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        return _method_options("damoc.filtering", "FILTERS", "filtering method", options, info.data.get("method"))

    def method_settings(self) -> BaseModel:
        """The chosen method's settings as its own typed model."""
        from damoc.filtering import FILTERS
        from damoc.registry import validate_settings

        return validate_settings(FILTERS.get(self.method), self.options.get(self.method), self.method)


class CompressionConfig(_Section):
    """Stage 2: drop low-information words by perplexity, gate by BERTScore."""

    enabled: bool = Field(True, description="false: train on the filtered samples as they are")
    method: str = Field("damoc", description="compression method: damoc (iterative token-level + question-related "
                        "answer scoring + rewriting), or the baselines llmlingua / longllmlingua; registered: see "
                        "damoc.compression.methods")
    method_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, validate_default=True, description="each compression method's own settings, as "
        "method_options.METHOD.KEY (e.g. method_options.longllmlingua.dynamic_ratio)")
    rate: float = Field(0.6, gt=0.0, le=1.0, description="target kept fraction of the sample, counted in "
                        "`budget_unit`")
    bertscore_threshold: float = Field(0.9, ge=0.0, le=1.0, description="gate: samples scoring below it keep "
                                       "their original text (or are rewritten once a rewriter exists)")
    scorer_model: str | None = Field(None, description="small causal LM scoring perplexity; null: the first "
                                     "candidate's base (else chat) checkpoint")
    segment_words: int = Field(200, ge=8, description="words per iterative-compression segment")
    rewrite: bool = Field(False, description="rewrite gate failures with an LLM (compression.rewriter), "
                          "iteratively, before they fall back")
    budget_unit: Literal["tokens", "words"] = Field(
        "words", description="what `rate` and the per-part rates count: whitespace words (the default the "
        "selection benchmark measured; on tiny scorers a token budget fails the 0.9 gate far more often) or the "
        "scorer's tokens (training cost)")
    instruction_rate: float = Field(
        1.0, gt=0.0, le=1.0, description="kept fraction of the instruction (1.0: protected; identical "
        "instructions are compressed once); set it to `rate` to compress instructions like the rest")
    question_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="kept fraction of the question/context; null: solved so that the "
        "whole sample keeps `rate`")
    answer_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="kept fraction of the answer; null: solved so that the whole sample "
        "keeps `rate`")
    answer_scoring: Literal["conditional", "contrastive"] = Field(
        "conditional", description="answer word importance: conditional -log p(a|Q,a<i), or contrastive "
        "NLL(a|a<i) - NLL(a|Q,a<i) (question-related perplexity)")
    gate_model: str | None = Field(None, description="BERTScore embedding model dir; null: all-MiniLM-L6-v2 "
                                   "(shipped offline)")
    gate_layer: int | None = Field(None, ge=1, description="BERTScore layer; null: the gate model's last layer")
    gate_window_words: int = Field(200, ge=16, description="long samples are gated whole, in windows of this "
                                   "many words (never truncated)")
    gate_failure: Literal["original", "best_attempt"] = Field(
        "original", description="samples still below the gate after rewriting train on their original text, "
        "or on their best-scoring attempt")
    rewriter: str = Field("local", description="rewriter backend: openai (any OpenAI-compatible server, e.g. "
                          "vLLM) or local (in-process transformers chat model)")
    rewriter_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, validate_default=True, description="each rewriter backend's own settings, as "
        "rewriter_options.BACKEND.KEY (e.g. rewriter_options.openai.base_url)")
    rewrite_rounds: int = Field(2, ge=1, description="rewriting rounds per failing sample (failed attempts "
                                "return as negative examples)")
    rewrite_examples: int = Field(3, ge=0, description="passing compressions shown to the rewriter as examples")
    rewrite_length_tolerance: float = Field(0.1, ge=0.0, description="a revision may exceed the compressed "
                                            "length by at most this fraction (words)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered("damoc.compression.methods", "METHODS", value)

    @field_validator("method_options")
    @classmethod
    def _method_settings(cls, options: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        return _method_options("damoc.compression.methods", "METHODS", "compression method", options,
                               info.data.get("method"))

    @field_validator("rewrite")
    @classmethod
    def _rewriter_exists(cls, value: bool) -> bool:
        from damoc.compression.rewriters import REWRITERS

        if value and len(REWRITERS) == 0:
            raise ValueError("no rewriter backend is registered; set compression.rewrite: false — gate failures "
                             "keep their original text")
        return value

    @field_validator("rewriter")
    @classmethod
    def _known_rewriter(cls, value: str) -> str:
        from damoc.compression.rewriters import REWRITERS

        if value not in REWRITERS:
            raise ValueError(f"unknown rewriter backend {value!r}{did_you_mean(value, REWRITERS.names())}; "
                             f"available: {', '.join(REWRITERS.names())}")
        return value

    @field_validator("rewriter_options")
    @classmethod
    def _rewriter_settings(cls, options: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        from damoc.compression.rewriters import REWRITERS
        from damoc.registry import validate_settings

        out: dict[str, dict[str, Any]] = {}
        chosen = info.data.get("rewriter")
        for name in sorted(set(options) | ({chosen} if chosen else set())):
            if name not in REWRITERS:
                raise ValueError(f"'{name}' is not a rewriter backend; available: {', '.join(REWRITERS.names())}")
            out[name] = validate_settings(REWRITERS.get(name), options.get(name), name).model_dump(mode="json")
        return out


class PruningConfig(_Section):
    """Stage 3: drop layers whose input and output barely differ; merge their task vectors into neighbours."""

    enabled: bool = Field(True, description="false: train every candidate with all its layers")
    threshold: float = Field(0.85, gt=0.0, lt=1.0, description="prune layers whose cos(h_in, h_out) exceeds it")
    merge_keep_fraction: float = Field(0.2, gt=0.0, le=1.0,
                                       description="fraction of task-vector entries kept (by magnitude) when merging")
    calibration_samples: int = Field(32, ge=1, description="training samples used to measure layer similarity")
    max_prune_fraction: float = Field(0.5, ge=0.0, lt=1.0,
                                      description="never drop more than this share of layers (both rules)")
    rule: Literal["threshold", "fraction"] = Field(
        "threshold", description="threshold: drop layers above `threshold` (capped by max_prune_fraction); "
        "fraction: drop the round(target_fraction x layers) most similar layers of every candidate alike")
    target_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="share of layers dropped when rule=fraction")
    min_layers_kept: int = Field(2, ge=1, description="never keep fewer layers than this (either rule)")
    protect_first_last: bool = Field(True, description="never drop the first or the last layer (either rule)")
    merge_sparsity_reading: Literal["keep", "drop"] = Field(
        "keep", description="keep: merge_keep_fraction is the share of task-vector entries kept (TIES density; "
        "earlier runs); drop: it is the share zeroed, the literal sense of the paper's 'sparsity rate 20%'")
    merge_coefficient: Literal["importance", "normalized", "constant"] = Field(
        "importance", description="weight of a pruned layer's task vector: importance 1 - S_p; normalized: "
        "importances scaled to sum to 1 per gap of consecutive pruned layers; constant: merge_alpha")
    merge_alpha: float = Field(1.0, ge=0.0, description="task-vector weight when merge_coefficient=constant")
    merge_target: Literal["preceding", "following", "split"] = Field(
        "preceding", description="kept layer receiving a pruned layer's task vector: nearest preceding, nearest "
        "following, or half to each")
    method: Literal["damoc", "laco"] = Field(
        "damoc", description="damoc: drop near-identity layers and merge their chat-base task vectors (needs "
        "base_path); laco: the LaCo baseline, collapsing upper layers into a prior one (chat checkpoint only)")
    on_unsupported: Literal["unpruned", "fail"] = Field(
        "unpruned", description="a candidate whose architecture pruning does not know: unpruned: warn at "
        "validation and train it with all its layers (flagged); fail: stop at validation, naming it")
    laco_layers_per_merge: int = Field(4, ge=2, description="LaCo C: layers combined in one collapse (layer l "
                                       "and the C-1 after it)")
    laco_interval: int = Field(2, ge=1, description="LaCo I: after an accepted collapse at layer l, the next "
                               "try is at l - I")
    laco_threshold: float = Field(0.65, ge=-1.0, le=1.0, description="LaCo T: a collapse is kept only if the "
                                  "cosine between the collapsed and original model's final hidden states exceeds it")
    laco_lowest_layer: int | None = Field(None, ge=0, description="LaCo L: lowest layer index a collapse may "
                                          "start at; null: half the depth (the paper's 16 of 32)")
    laco_calibration_samples: int = Field(5, ge=1, description="LaCo: training samples whose final hidden "
                                          "states decide each collapse (a few; every try runs them once)")

    @property
    def needs_base(self) -> bool:
        """Whether a candidate needs a base checkpoint to be pruned: the damoc method merges chat−base task
        vectors; LaCo collapses the chat model's own layers."""
        return self.method != "laco"


def _positive_quantity(value: str, key: str) -> str:
    from kubernetes.utils import parse_quantity

    try:
        ok = parse_quantity(value) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{key} {value!r} is not a positive Kubernetes quantity (e.g. 8, 500m, 64Gi)")
    return value


class TrainJobSettings(_Section):
    """launcher trainjob: a Kubeflow Trainer v2 TrainJob per candidate (damoc.cluster.trainjob)."""

    runtime: str = Field("torch-distributed", min_length=1, max_length=253, description="name of the training "
                         "runtime the TrainJob references (e.g. torch-distributed, deepspeed-distributed, or the "
                         "chart's damoc-torch)")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime", description="cluster-wide runtime, or a TrainingRuntime in the job's namespace")
    ml_policy: Literal["torch", "mpi"] = Field(
        "torch", description="the runtime's mlPolicy: torch (torchrun in every node; DeepSpeed ZeRO via "
        "training.deepspeed) or mpi (deepspeed-distributed: mpirun from the launcher; image needs OpenMPI and sshd)")
    nodes: int = Field(1, ge=1, description="numNodes: training nodes (pods)")
    gpus_per_node: int = Field(1, ge=0, description="GPUs requested per node (0: CPU-only); numProcPerNode is "
                               "training.processes, else this (at least 1)")
    cpu: str = Field("8", description="CPU request = limit per node")
    memory: str = Field("64Gi", description="memory request = limit per node")
    shm_size: str = Field("16Gi", description="memory-backed /dev/shm per node (counts against memory)")
    timeout_s: float = Field(86400.0, gt=0.0, description="seconds to wait for the TrainJob before it is "
                             "deleted and the candidate fails")
    poll_s: float = Field(30.0, gt=0.0, description="seconds between status polls")
    active_deadline_s: int | None = Field(None, ge=1, description="spec.activeDeadlineSeconds: Trainer fails the "
                                          "job after this long (null: no deadline besides timeout_s)")

    @field_validator("cpu", "memory", "shm_size")
    @classmethod
    def _quantity(cls, value: str, info: ValidationInfo) -> str:
        return _positive_quantity(value, f"training.trainjob.{info.field_name}")


class TrainingConfig(_Section):
    """Stage 4: fine-tune every (compressed) candidate."""

    method: Literal["full", "lora", "both"] = Field(
        "full", description="full fine-tuning, or LoRA (peft, all linear layers, merged after training), or both: "
        "each candidate is expanded into '<name>@full' and '<name>@lora' (each trained and evaluated), and the "
        "selection also says which method won per model (the paper's method selection)")
    launcher: str = Field("in_process", description="where training runs; registered: see damoc.training.launchers")
    epochs: float = Field(1.0, gt=0.0, description="passes over the training samples")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps per candidate; overrides epochs "
                                  "(a fixed budget however small the filtered set); null: epochs decide")
    proxy_steps: int | None = Field(None, ge=1, description="optimizer steps per candidate in mode damoc only "
                                    "(the proxies: the same budget for every candidate whatever the filtered set "
                                    "holds; overrides epochs and max_steps there); grid_search ignores it; null: "
                                    "epochs/max_steps decide")
    learning_rate: float = Field(1e-3, gt=0.0, description="peak learning rate (reached after warmup; then "
                                 "lr_scheduler)")
    batch_size: int = Field(16, ge=1, description="samples per optimizer step over all processes (effective batch "
                            "= micro batch x gradient_accumulation_steps x processes; must divide evenly)")
    max_length: int = Field(256, ge=16, description="tokens per sample (prompt cut from the left first)")
    seed: int = Field(0, description="seed of initialisation-dependent parts and data order")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    chat_template: bool = Field(True, description="prompts in the candidate tokenizer's own chat template when it "
                                "has one (instruction as the system turn), else the plain ### Instruction / ### Input "
                                "format; evaluation encodes the same way")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt"] = Field(
        "cosine", description="learning-rate schedule after warmup (the HF Trainer's lr_scheduler_type)")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="share of the optimizer steps with a linear "
                                "warmup from 0 to learning_rate (rounded up to whole steps)")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay (not on biases and norms)")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="AdamW beta2")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient-norm clipping (0: off)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro batches summed per optimizer step "
                                             "(divides batch_size; e.g. the paper's 64 = 4 x 16 on one GPU)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass "
                                         "(less memory, ~30% more compute)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="mixed precision; auto: bf16 on a GPU that supports it, fp32 otherwise (CPU); fp16 "
        "needs a GPU")
    deepspeed: Literal["zero2", "zero3"] | None = Field(
        None, description="DeepSpeed ZeRO stage under the HF Trainer (config generated and validated by "
        "damoc.training.deepspeed_config); null: plain PyTorch")
    deepspeed_offload: bool = Field(False, description="with deepspeed: offload optimizer states (zero3: and "
                                    "parameters) to CPU memory")
    save_steps: int | None = Field(None, ge=1, description="write a resumable checkpoint every N optimizer steps "
                                   "next to the output; a rerun with the same model, data and settings resumes "
                                   "from the last one; null: no checkpoints")
    processes: int | None = Field(None, ge=1, description="training processes per node (torchrun, pytorchjob, "
                                  "trainjob); null: the GPUs visible, else 1")
    nodes: int = Field(1, ge=1, description="pytorchjob (legacy): nodes (replicas: one master + nodes-1 workers)")
    gpus_per_node: int = Field(1, ge=0, description="pytorchjob (legacy): GPUs requested per node (0: CPU-only pods)")
    image: str | None = Field(None, description="pytorchjob, trainjob: training container image; null: "
                              "$DAMOC_TRAINING_IMAGE (the namespace and S3 secret name also come from the "
                              "environment, see damoc.training.launchers)")
    staging_uri: str | None = Field(None, description="pytorchjob, trainjob: s3:// prefix where the job's pods "
                                    "read the model and samples and write the trained model; null: "
                                    "$DAMOC_TRAINING_STAGING_URI")
    checkpoint_uri: str | None = Field(None, description="with save_steps: where checkpoints are mirrored, an "
                                       "s3://bucket/prefix or a shared-volume path (<uri>/<run fingerprint>/"
                                       "checkpoint-<step>/, the last two kept), so a rerun on a fresh disk (a "
                                       "preempted pod) resumes from the last one; null: local disk only")
    trainjob: TrainJobSettings = Field(TrainJobSettings(), description="launcher trainjob (Kubeflow Trainer v2): "
                                       "runtime, nodes, GPUs and resources per node, wait")

    @field_validator("launcher")
    @classmethod
    def _known_launcher(cls, value: str) -> str:
        return _registered("damoc.training.launchers", "LAUNCHERS", value)

    def for_mode(self, mode: str) -> "TrainingConfig":
        """The settings a candidate is trained with in `mode`: damoc proxies get proxy_steps as their step
        budget when set; grid search (the ground truth) keeps epochs/max_steps."""
        if mode != "damoc" or self.proxy_steps is None:
            return self
        return self.model_copy(update={"max_steps": self.proxy_steps})

    @field_validator("checkpoint_uri")
    @classmethod
    def _checkpoint_uri(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None  # "" (e.g. an unset pipeline parameter) means local only

    @model_validator(mode="after")
    def _batch_divides(self) -> "TrainingConfig":
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps "
                             f"{self.gradient_accumulation_steps}")
        if self.deepspeed_offload and self.deepspeed is None:
            raise ValueError("deepspeed_offload needs deepspeed: zero2 or zero3")
        if self.checkpoint_uri is not None and self.save_steps is None:
            raise ValueError("checkpoint_uri needs save_steps (no checkpoints are written without it)")
        return self


class EvaluationConfig(_Section):
    """Stage 5: generate answers for the evaluation set and score them."""

    @model_validator(mode="after")
    def _predict_or_loglik(self) -> "EvaluationConfig":
        if not self.predict and self.rank_by != "loglik":
            raise ValueError("predict: false leaves no metric to rank by; set rank_by: loglik or predict: true")
        return self

    max_new_tokens: int = Field(64, ge=1, description="greedy generation length")
    batch_size: int = Field(16, ge=1, description="prompts per generation batch")
    rank_by: Literal["metric", "loglik"] = Field(
        "loglik", description="loglik: mean per-token log-likelihood of the reference answers (the selection "
        "benchmark's pick: less noisy on briefly trained proxies); metric: the task's metric; both are always "
        "reported, and grid search always ranks by the metric (the ground truth)")
    predict: bool = Field(True, description="false (with rank_by: loglik): skip generating answers, so evaluation "
                          "is one forward pass per row and the task metric is not reported")
    tie_confidence: float = Field(0.9, gt=0.0, lt=1.0, description="candidates whose paired-bootstrap interval "
                                  "(over eval rows) of the gap to the winner at this level includes 0 are "
                                  "reported as tied with it")
    bootstrap_samples: int = Field(1000, ge=100, description="bootstrap resamples of the eval rows")
    sequential: bool = Field(True, description="report how many eval rows the ranking needed: looks after "
                             "`sequential_block` rows, then doubling (file order), until the paired bootstrap "
                             "separates the leader from every rival at tie_confidence (Bonferroni over the looks); "
                             "selection.json `sequential_eval` (rows used, saving); the ranking uses every row")
    sequential_block: int = Field(20, ge=1, description="eval rows at the sequential decision's first look")


# The quantity forms KFP's compiler accepts (kfp.dsl.PipelineTask.set_cpu_*/set_memory_*).
_CPU_RE = r"^([0-9]*\.?[0-9]+)(m?)$"
_MEMORY_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_MEMORY_RE = r"^([0-9]+)(" + "|".join(u for u in _MEMORY_UNITS if u) + ")?$"


def _quantity(value: str, kind: str) -> float:
    """A Kubernetes CPU ('500m', '2') or memory ('512Mi', '8G') quantity as a number (cores, bytes)."""
    import re

    match = re.match(_CPU_RE if kind == "cpu" else _MEMORY_RE, value)
    if not match or float(match.group(1)) <= 0:
        example = "'500m' or '2'" if kind == "cpu" else "'512Mi', '8Gi' or '16G' (whole numbers)"
        raise ValueError(f"'{value}' is not a positive Kubernetes {kind} quantity (e.g. {example})")
    number = float(match.group(1))
    if kind == "cpu":
        return number / 1000 if match.group(2) else number
    return number * _MEMORY_UNITS[match.group(2) or ""]


class TaskResources(_Section):
    """Kubernetes requests and limits of one pipeline task's container."""

    cpu_request: str = Field("1", description="CPU cores reserved for the task ('500m', '2')")
    cpu_limit: str = Field("2", description="CPU cores the task may use at most")
    memory_request: str = Field("2Gi", description="memory reserved for the task ('512Mi', '8Gi')")
    memory_limit: str = Field("4Gi", description="memory at which the task is killed (OOMKilled)")
    accelerators: int = Field(0, ge=0, description="accelerators (resources.accelerator_type) the task gets; 0: none")

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    @classmethod
    def _k8s_quantity(cls, value: str, info: ValidationInfo) -> str:
        _quantity(value, "cpu" if info.field_name.startswith("cpu") else "memory")
        return value

    @model_validator(mode="after")
    def _limit_covers_request(self) -> "TaskResources":
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if _quantity(limit, kind) < _quantity(request, kind):
                raise ValueError(f"{kind}_limit {limit} is below {kind}_request {request}")
        return self


def _task_model(task: str, cpu: tuple[str, str], memory: tuple[str, str], accelerators: int = 0) -> Any:
    """TaskResources with this task's defaults (a subclass, so a partial override keeps the other defaults
    and the config table shows the task's own defaults)."""
    from pydantic import create_model

    defaults = {"cpu_request": cpu[0], "cpu_limit": cpu[1], "memory_request": memory[0], "memory_limit": memory[1],
                "accelerators": accelerators}
    base = TaskResources.model_fields
    fields: dict[str, Any] = {
        key: (base[key].annotation, Field(value, description=base[key].description,
                                          **({"ge": 0} if key == "accelerators" else {})))
        for key, value in defaults.items()}
    return create_model(f"{task.title().replace('_', '')}Resources", __base__=TaskResources,
                        __doc__=f"Requests and limits of the {task} task.", **fields)


def _task(model: Any) -> Any:
    d = model()
    return Field(default_factory=model, description=f"the task's requests/limits (default cpu {d.cpu_request}/"
                 f"{d.cpu_limit}, memory {d.memory_request}/{d.memory_limit}, {d.accelerators} accelerators)")


ValidateResources = _task_model("validate_config", ("100m", "500m"), ("256Mi", "1Gi"))
PrepareResources = _task_model("prepare", ("1", "2"), ("2Gi", "4Gi"))
FilterResources = _task_model("filter", ("2", "4"), ("8Gi", "16Gi"))
CompressResources = _task_model("compress", ("2", "4"), ("8Gi", "16Gi"))
# Pruning loads the whole candidate on CPU (float32) and writes the merged copy: sized for a ~7B candidate.
PruneResources = _task_model("prune", ("4", "8"), ("32Gi", "64Gi"))
TrainResources = _task_model("train", ("4", "8"), ("32Gi", "64Gi"), accelerators=1)
EvaluateResources = _task_model("evaluate", ("4", "8"), ("32Gi", "64Gi"), accelerators=1)
RankResources = _task_model("rank", ("1", "2"), ("2Gi", "4Gi"))


class ResourcesConfig(_Section):
    """Per-task Kubernetes resources. Compile-time settings, not a pipeline parameter: kfp.local cannot resolve
    parameters in resource fields inside ParallelFor, so `damoc compile` writes the schema defaults into the
    compiled YAML and `damoc compile --config run.yaml` this section of the run's config."""

    accelerator_type: str = Field("nvidia.com/gpu", min_length=1,
                                  description="Kubernetes resource name of the accelerators (tasks with "
                                  "accelerators > 0 also tolerate the NoSchedule taint of that name)")
    validate_config: ValidateResources = _task(ValidateResources)
    prepare: PrepareResources = _task(PrepareResources)
    filter: FilterResources = _task(FilterResources)
    compress: CompressResources = _task(CompressResources)
    prune: PruneResources = _task(PruneResources)
    train: TrainResources = _task(TrainResources)
    evaluate: EvaluateResources = _task(EvaluateResources)
    rank: RankResources = _task(RankResources)


Mode = Literal["damoc", "grid_search"]


class RunConfig(_Section):
    mode: Mode = Field("damoc", description="damoc, or grid_search (same graph; filtering, compression and "
                       "pruning off: the ground truth)")
    data: DataConfig = Field(..., description="the domain data and its task type")
    candidates: list[Candidate] = Field(..., min_length=1, description="the LLMs to choose between")
    filter: FilterConfig = Field(FilterConfig(), description="stage 1: data filtering")
    compression: CompressionConfig = Field(CompressionConfig(), description="stage 2: token compression")
    pruning: PruningConfig = Field(PruningConfig(), description="stage 3: layer pruning with sparse merging")
    training: TrainingConfig = Field(TrainingConfig(), description="stage 4: fine-tuning")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="stage 5: evaluation")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="per-task Kubernetes requests/limits "
                                       "(compile time: `damoc compile --config`; not a pipeline parameter)")

    @model_validator(mode="after")
    def _unique_names(self) -> "RunConfig":
        from damoc.training.methods import expand_candidates

        if self.training.method == "both":  # idempotent: variants already carrying a method stay as they are
            self.__dict__["candidates"] = expand_candidates(self.candidates)
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidates: duplicate name(s) {dupes}; every candidate needs its own name")
        return self

    @property
    def rank_by(self) -> str:
        """What candidates are ranked by: grid search is the ground truth, so always its task metric."""
        return self.evaluation.rank_by if self.mode == "damoc" else "metric"

    @property
    def metric(self) -> str:
        from damoc.evaluation.tasks import TASKS

        return TASKS.get(self.data.task).metric

    def scorer_model_path(self) -> str:
        if self.compression.scorer_model:
            return self.compression.scorer_model
        first = self.candidates[0]
        return first.base_path or first.path


SECTIONS: tuple[str, ...] = ("data", "filter", "compression", "pruning", "training", "evaluation")
"""The run configuration's sections: each is one KFP pipeline parameter (a JSON object)."""

# Keys that moved: a config using the old spelling gets told where the setting lives now.
MOVED_KEYS = {"filter.graphcut_lambda": "filter.options.graphcut.lambda"}


def _section_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the schema allows where `loc` points (its parent section), or None if that is not a section."""
    import typing

    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue  # a list item (candidates.0): its element type was taken below
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        model = fields[part].annotation
        for _ in range(3):  # list[Candidate], X | None: the model inside
            if isinstance(model, type) and issubclass(model, BaseModel):
                break
            args = [a for a in typing.get_args(model) if a is not type(None)]
            model = args[0] if args else None
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unknown_key(key: str, loc: tuple[Any, ...]) -> str:
    if key in MOVED_KEYS:
        return f"moved to {MOVED_KEYS[key]}"
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), _section_keys(loc[:-1]) or [], n=1, cutoff=0.6)
    prefix = key.rpartition(".")[0]
    hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
    return f"unknown key{hint} (keys: `damoc config table`, README 'Run configuration')"


def _blamed_override(key: str, overrides: tuple[str, ...]) -> str | None:
    """The --set key that wrote `key` (or a section above it), if any."""
    for dotted in overrides:
        if key == dotted or key.startswith(dotted + "."):
            return dotted
    return None


def _format_error(source: str, err: ValidationError, overrides: tuple[str, ...] = ()) -> str:
    lines = []
    blamed_all = True
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(key, tuple(e["loc"]))
        elif e["type"] == "missing":
            msg = "required key is missing"
        blamed = _blamed_override(key, overrides)
        if blamed is not None:  # the value came from the command line, not from the file
            lines.append(f"  --set {key}: {msg}")
            continue
        blamed_all = False
        below = [o for o in overrides if o.startswith(key + ".")]  # a section check over a --set value
        lines.append(f"  {key}: {msg}" + (f" (with --set {', '.join(below)})" if below else ""))
    head = (f"invalid --set value (applied to {source}):" if blamed_all and overrides
            else f"invalid run configuration in {source}:")
    return "\n".join([head, *lines])


def _resolve_relative(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make local relative paths in the config relative to the config file, as users expect."""

    def relative(value: Any) -> bool:
        return isinstance(value, str) and bool(value) and "://" not in value and not Path(value).is_absolute()

    def fix_data(value: Any) -> Any:
        # data paths are always files: a relative one means next to the config, found there or not (a missing
        # one is then reported with its full path, never replaced by a same-named file in the working dir)
        return str((base_dir / value).resolve()) if relative(value) else value

    def fix_model(value: Any) -> Any:
        # a model reference may be a hub id ("org/name"): only an existing dir or an explicit ./ ../ path is local
        if relative(value) and ((base_dir / value).exists() or value.startswith(("./", "../"))):
            return str((base_dir / value).resolve())
        return value

    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "eval"):
            if key in data:
                data[key] = fix_data(data[key])
    for cand in raw.get("candidates") or []:
        if isinstance(cand, dict):
            for key in ("path", "base_path"):
                if key in cand:
                    cand[key] = fix_model(cand[key])
    comp = raw.get("compression")
    if isinstance(comp, dict) and comp.get("scorer_model"):
        comp["scorer_model"] = fix_model(comp["scorer_model"])
    return raw


def parse_config(raw: Any, source: str = "<config>", overrides: tuple[str, ...] = ()) -> RunConfig:
    """Validate a config mapping; `overrides` are the dotted keys set with --set (errors there blame --set)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid run configuration in {source}: the top level must be a mapping of keys")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err, overrides)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (silently, the last one would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (the earlier value would be silently ignored)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 lambda loader, node: loader.construct_mapping(node))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML run configuration. `overrides` maps dotted keys to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(raw, dict):
        raw = _resolve_relative(raw, path.resolve().parent)
        for dotted, value in (overrides or {}).items():
            _set_dotted(raw, dotted, value)
    return parse_config(raw, str(path), tuple(overrides or {}))


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):  # candidates.0.path: an item of a list, by index
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {dotted}: '{part}' is not an index of '{'.'.join(parts[:depth])}' "
                                  f"(0 to {len(node) - 1})")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[:depth])}' is not a section "
                              "(see `damoc config table` for the keys)")
        if last:
            node[part] = value
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            node = node[part]
