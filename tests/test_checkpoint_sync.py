"""training.checkpoint_uri: checkpoints mirrored to S3 (moto's server) or a shared path; a run whose local
scratch is gone (a preempted pod) resumes from the remote copy and ends with the same weights."""
from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydantic
import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from damoc import storage
from damoc.config import TrainingConfig
from damoc.data.schema import Sample
from damoc.training import checkpoint_sync as cs
from damoc.training.finetune import finetune, run_fingerprint, scratch_dir

SAMPLES = [Sample(id=str(i), instruction="Repeat the word.", input=f"word {w}", output=w)
           for i, w in enumerate(["river", "market", "bridge", "fever", "town", "patient"] * 4)]
SETTINGS = dict(max_steps=8, batch_size=4, max_length=32, save_steps=2, learning_rate=3e-3)
ENV_VARS = ("DAMOC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "DAMOC_S3_SECURE", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")


@pytest.fixture(scope="module")
def s3_endpoint(start_moto) -> Iterator[str]:
    with start_moto() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAMOC_S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADAMOCTESTKEY0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "damoc-test-secret-0123456789")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("DAMOC_S3_RETRIES", "0")
    name = f"ckpt-{uuid.uuid4().hex[:12]}"
    storage.client_from_env().make_bucket(name)
    return name


@pytest.fixture(params=["s3", "local"])
def store(request, tmp_path) -> str:
    """A checkpoint_uri root: an s3:// prefix on moto, or a directory standing for a shared volume."""
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('bucket')}/runs/ckpt"
    return str(tmp_path / "shared-volume" / "ckpt")


class _Preempt(TrainerCallback):
    """Raises right after the checkpoint of step `at` was written (and mirrored), like a pod killed mid-run."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_save(self, args, state, control, **kw):
        if state.global_step >= self.at:
            raise KeyboardInterrupt("preempted")


@pytest.fixture(scope="module")
def uninterrupted(tiny_pair, tmp_path_factory) -> tuple[dict, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("whole") / "model"
    stats = finetune(tiny_pair[1], SAMPLES, out, TrainingConfig(**SETTINGS))
    return stats, AutoModelForCausalLM.from_pretrained(out).state_dict()


def _fake_checkpoint(root: Path, step: int) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / cs.TRAINER_STATE).write_text(f'{{"global_step": {step}}}')
    (path / "model.safetensors").write_bytes(bytes([step]) * 64)
    return path


# --------------------------------------------------------------------------- the preempted pod, end to end

def test_preempted_run_resumes_from_the_remote_checkpoint(tiny_pair, tmp_path, store, uninterrupted):
    settings = TrainingConfig(**SETTINGS, checkpoint_uri=store)
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_pair[1], SAMPLES, out, settings, callbacks=[_Preempt(at=6)])
    remote = cs.run_uri(store, run_fingerprint(tiny_pair[1], SAMPLES, settings))
    assert remote.endswith("/" + run_fingerprint(tiny_pair[1], SAMPLES, settings)[:16])
    # Saved at 2, 4, 6; the mirror keeps the last two, all complete.
    assert cs.remote_checkpoints(remote) == {4: True, 6: True}

    shutil.rmtree(scratch_dir(out))  # the pod's disk is gone
    resumed = finetune(tiny_pair[1], SAMPLES, out, settings)
    assert resumed["resumed_from_step"] == 6 and resumed["steps"] == 8
    assert cs.remote_checkpoints(remote) == {}  # removed once the model is saved, like the local scratch
    assert not scratch_dir(out).exists()

    whole_stats, whole = uninterrupted
    assert whole_stats["steps"] == 8 and whole_stats["resumed_from_step"] is None
    got = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert got.keys() == whole.keys()
    assert all(torch.allclose(got[k], whole[k], atol=1e-5) for k in whole)
    # Training changed the weights, so equal weights mean the resumed part really ran steps 7-8.
    base = AutoModelForCausalLM.from_pretrained(tiny_pair[1]).state_dict()
    assert any(not torch.allclose(base[k], whole[k], atol=1e-4) for k in whole)


def test_unreachable_bucket_is_one_clear_error(tiny_pair, tmp_path, bucket):
    settings = TrainingConfig(**SETTINGS, checkpoint_uri="s3://no-such-bucket-damoc/ckpt")
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket-damoc/ckpt/[0-9a-f]{16}.*does not exist"):
        finetune(tiny_pair[1], SAMPLES, tmp_path / "m", settings)


# --------------------------------------------------------------------------- completeness, pruning

def test_incomplete_remote_checkpoints_are_ignored(tmp_path, store):
    run = f"{store}/0123456789abcdef"
    local = tmp_path / "local"
    for step in (2, 4, 6):
        cs.push(_fake_checkpoint(local, step), run)
    # 6: an upload cut short (the marker is still there); 4: no trainer_state.json (a torn copy).
    if storage.is_s3(run):
        bucket, key = storage.split_s3(run)
        client = storage.client_from_env()
        client.put_object(bucket, f"{key}/checkpoint-6/{storage.INCOMPLETE_MARKER}", BytesIO(b""), 0)
        client.remove_object(bucket, f"{key}/checkpoint-4/{cs.TRAINER_STATE}")
    else:
        (Path(run) / "checkpoint-4" / cs.TRAINER_STATE).unlink()
        (Path(run) / "checkpoint-6" / cs.TRAINER_STATE).unlink()
        (Path(run) / ".checkpoint-8.tmp-1234abcd").mkdir()  # a copy being staged: not a checkpoint
    assert cs.remote_checkpoints(run) == {2: True, 4: False, 6: False}

    scratch = tmp_path / "scratch" / "run-0123456789abcdef"
    assert cs.pull_latest(run, scratch) == 2
    assert sorted(p.name for p in scratch.iterdir()) == ["checkpoint-2"]
    assert (scratch / "checkpoint-2" / "model.safetensors").read_bytes() == bytes([2]) * 64
    assert cs.pull_latest(f"{store}/fedcba9876543210", tmp_path / "other") is None  # nothing there yet


def test_only_the_last_two_remote_checkpoints_are_kept(tmp_path, store):
    run = f"{store}/0123456789abcdef"
    local = tmp_path / "local"
    sync = cs.CheckpointSync(run)

    class State:
        is_world_process_zero = True
        global_step = 0

    class Args:
        output_dir = str(local)

    for step in (3, 6, 9, 12):
        _fake_checkpoint(local, step)
        State.global_step = step
        sync.on_save(Args, State, None)
        assert sorted(cs.remote_checkpoints(run)) == [s for s in (3, 6, 9, 12) if step - 3 <= s <= step]
    assert sync.pushed == [3, 6, 9, 12]
    assert cs.remote_checkpoints(run) == {9: True, 12: True}
    # A torn newer one does not count towards the two: both complete ones stay.
    (local / "checkpoint-15").mkdir()
    (local / "checkpoint-15" / "x.bin").write_bytes(b"x")
    cs.push(local / "checkpoint-15", run)
    assert cs.prune(run) == [] and cs.remote_checkpoints(run) == {9: True, 12: True, 15: False}
    # Another rank's on_save uploads nothing.
    State.is_world_process_zero, State.global_step = False, 18
    _fake_checkpoint(local, 18)
    sync.on_save(Args, State, None)
    assert 18 not in cs.remote_checkpoints(run)
    cs.remove_all(run)
    assert cs.remote_checkpoints(run) == {}


# --------------------------------------------------------------------------- settings

def test_checkpoint_uri_setting():
    assert TrainingConfig().checkpoint_uri is None
    assert TrainingConfig(save_steps=5, checkpoint_uri="  ").checkpoint_uri is None
    with pytest.raises(pydantic.ValidationError, match="checkpoint_uri needs save_steps"):
        TrainingConfig(checkpoint_uri="s3://bucket/ckpt")
    # Where checkpoints live does not change what is optimised: same fingerprint, so any copy resumes.
    a = TrainingConfig(save_steps=5)
    b = a.model_copy(update={"checkpoint_uri": "s3://bucket/ckpt"})
    assert run_fingerprint("m", SAMPLES, a) == run_fingerprint("m", SAMPLES, b)
    assert cs.run_uri("s3://bucket/ckpt/", "ab" * 32) == "s3://bucket/ckpt/" + "ab" * 8


# --------------------------------------------------------------------------- the PyTorchJob pod path

def test_restarted_worker_pod_resumes_from_s3(tiny_pair, tmp_path, bucket, monkeypatch):
    """damoc.training.worker as a PyTorchJob pod runs it: inputs staged on S3, settings as JSON. A restarted pod
    has a fresh disk (another --workdir, so another local model path) and still finds the run's checkpoints."""
    import damoc.training.finetune as ft
    from damoc.data.records import write_samples
    from damoc.training import worker

    staging = f"s3://{bucket}/staging/job-1"
    settings = TrainingConfig(**SETTINGS, checkpoint_uri=f"s3://{bucket}/ckpt")
    write_samples(SAMPLES, tmp_path / "samples.jsonl")
    storage.publish(Path(tiny_pair[1]), f"{staging}/model")
    storage.publish(tmp_path / "samples.jsonl", f"{staging}/samples.jsonl")
    storage.write_text(f"{staging}/settings.json", settings.model_dump_json())
    argv = ["--model", f"{staging}/model", "--samples", f"{staging}/samples.jsonl", "--settings",
            f"{staging}/settings.json", "--out", f"{staging}/out/model", "--stats", f"{staging}/out/stats.json"]

    real = ft.finetune
    monkeypatch.setattr(ft, "finetune", lambda *a, **kw: real(*a, **kw, callbacks=[_Preempt(at=4)]))
    with pytest.raises(KeyboardInterrupt):
        worker.main([*argv, "--workdir", str(tmp_path / "pod-1")])
    monkeypatch.setattr(ft, "finetune", real)
    assert worker.main([*argv, "--workdir", str(tmp_path / "pod-2")]) == 0
    stats = json.loads(storage.read_text(f"{staging}/out/stats.json"))
    assert stats["resumed_from_step"] == 4 and stats["steps"] == 8
    assert storage.exists(f"{staging}/out/model/config.json")


@pytest.mark.slow
def test_two_torchrun_processes_resume_from_the_remote_checkpoint(tiny_pair, tmp_path):
    """~18 s (spawns torchrun): a checkpoint mirrored by an interrupted one-process run is pulled once per node
    (the local main process first, the other waits) and resumed by 2 gloo processes; their saves pass the
    barrier in on_save."""
    from damoc.training.launchers import LAUNCHERS

    store = str(tmp_path / "shared-volume")
    settings = TrainingConfig(**SETTINGS, checkpoint_uri=store)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_pair[1], SAMPLES, tmp_path / "first-pod" / "model", settings, callbacks=[_Preempt(at=4)])
    remote = cs.run_uri(store, run_fingerprint(tiny_pair[1], SAMPLES, settings))
    assert cs.remote_checkpoints(remote) == {2: True, 4: True}

    out = tmp_path / "second-pod" / "model"
    stats = LAUNCHERS.get("torchrun").train(tiny_pair[1], SAMPLES, out, settings.model_copy(
        update={"launcher": "torchrun", "processes": 2}))
    assert stats["world_size"] == 2 and stats["resumed_from_step"] == 4 and stats["steps"] == 8
    assert (out / "config.json").is_file() and cs.remote_checkpoints(remote) == {}
