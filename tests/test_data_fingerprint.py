"""The cache key of the data-reading tasks follows the data's content (s3:// ETag, local content)."""
import io
import json
import uuid

from damoc import storage
from damoc.config import DataConfig
from damoc.workflow.data_fingerprint import UNCACHEABLE, data_fingerprint, file_fingerprint
from damoc.workflow.model_metadata import config_layers, model_metadata, safetensors_parameters
from damoc.workflow.outcome import write_model_ref
from damoc.results import CandidateResult, StageResult


def _rows(n: int, tag: str) -> bytes:
    return "".join(json.dumps({"question": f"q{i} {tag}", "answer": "a"}) + "\n" for i in range(n)).encode()


def test_local_files_keyed_on_content(tmp_path):
    train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_bytes(_rows(5, "x"))
    evals.write_bytes(_rows(3, "y"))
    data = DataConfig(train=str(train), eval=str(evals))
    first = data_fingerprint(data)
    assert data_fingerprint(data) == first  # same content, same key: a cache hit
    train.write_bytes(_rows(5, "z"))  # rewritten in place, same path
    assert data_fingerprint(data) != first


def test_unknown_sources_are_never_cached(tmp_path):
    data = DataConfig(train=str(tmp_path / "train.jsonl"), eval=str(tmp_path / "missing.jsonl"))
    (tmp_path / "train.jsonl").write_bytes(_rows(2, "x"))
    a, b = data_fingerprint(data), data_fingerprint(data)
    assert a.startswith(UNCACHEABLE) and a != b


def test_s3_objects_keyed_on_etag(start_moto, monkeypatch):
    with start_moto() as port:
        monkeypatch.setenv("DAMOC_S3_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADAMOCTESTKEY0001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "damoc-test-secret-0123456789")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        bucket = f"damoc-{uuid.uuid4().hex[:10]}"
        client = storage.client_from_env()
        client.make_bucket(bucket)

        def put(key: str, body: bytes) -> None:
            client.put_object(bucket, key, io.BytesIO(body), len(body))

        put("data/train.jsonl", _rows(4, "a"))
        put("data/eval.jsonl", _rows(2, "b"))
        data = DataConfig(train=f"s3://{bucket}/data/train.jsonl", eval=f"s3://{bucket}/data/eval.jsonl")
        first = data_fingerprint(data)
        assert data_fingerprint(data) == first
        assert file_fingerprint(data.train).startswith("s3-object:")
        put("data/train.jsonl", _rows(4, "c"))  # next week's export, same key
        assert data_fingerprint(data) != first
        put("shards/part-0.jsonl", _rows(1, "d"))
        assert file_fingerprint(f"s3://{bucket}/shards").startswith("s3-prefix:")


def test_model_metadata_from_the_checkpoint_and_the_stages(zoo_dir, tmp_path):
    manifest = {c["name"]: c for c in json.loads((zoo_dir / "zoo.json").read_text())["candidates"]}
    llama = zoo_dir / manifest["tiny-llama"]["path"]
    assert safetensors_parameters(llama) == manifest["tiny-llama"]["params"]
    assert config_layers(llama) == manifest["tiny-llama"]["num_layers"]
    # a step that kept the model refers to it: the referred checkpoint answers
    kept = tmp_path / "kept"
    kept.mkdir()
    write_model_ref(kept, str(llama))
    meta = model_metadata(kept, CandidateResult(candidate="tiny-llama"))
    assert meta == {"candidate": "tiny-llama", "status": "ok", "layers_kept": 4, "layers_total": 4,
                    "parameters": manifest["tiny-llama"]["params"]}
    # what the steps measured wins: layers from the prune stage, parameters from the trainer
    result = CandidateResult(candidate="c")
    result.record(StageResult(stage="prune", stats={"num_layers_before": 4, "num_layers_after": 3,
                                                    "params_after": 900}))
    assert model_metadata(kept, result)["layers_kept"] == 3 and model_metadata(kept, result)["parameters"] == 900
    result.record(StageResult(stage="train", stats={"params": 950}))
    assert model_metadata(kept, result) == {"candidate": "c", "status": "ok", "layers_kept": 3, "layers_total": 4,
                                            "parameters": 950}
    assert model_metadata(tmp_path / "nothing", CandidateResult(candidate="x")) == {"candidate": "x", "status": "ok"}
