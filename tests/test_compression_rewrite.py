"""The iterative rewriting loop and its backends, against a fake OpenAI-compatible server on 127.0.0.1."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from damoc.compression.rewriters import (REWRITERS, OpenAIBackend, build_backend, build_messages,
                                         parse_revision, rewrite_failures)
from damoc.data.schema import Sample


class FakeServer:
    """/v1/chat/completions answering with `reply(request_json, call_no)` -> (status, text | None, delay_s)."""

    def __init__(self, reply):
        self.reply, self.requests, self.lock = reply, [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers), body))
                    call = len(outer.requests)
                status, text, delay = outer.reply(body, call)
                time.sleep(delay)
                payload = (json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
                           if text is not None else "not json").encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(reply):
        servers.append(FakeServer(reply))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


ORIG = [Sample(f"s{i}", "answer briefly", f"what does drug {i} treat", f"drug {i} treats fever in most adults")
        for i in range(3)]
COMP = [Sample(f"s{i}", "answer briefly", f"what drug {i}", f"drug {i} adults") for i in range(3)]


def overlap_gate(originals, candidates):
    """Share of the original's words present in the candidate (a deterministic stand-in for BERTScore)."""
    out = []
    for o, c in zip(originals, candidates):
        ref, cand = o.text.split(), set(c.text.split())
        out.append(sum(w in cand for w in ref) / len(ref))
    return out


def revision(question: str, answer: str, reason: bool = True) -> str:
    return f"Revised Compressed Text:\n[Question]\n{question}\n[Answer]\n{answer}" + ("\nReason: shorter." if reason else "")


def _backend(url, **kw):
    return build_backend("openai", {"base_url": url, "timeout_s": 2, "max_retries": 1, "backoff_s": 0.01, **kw})


def test_registry_and_settings():
    assert {"openai", "local"} <= set(REWRITERS.names())
    with pytest.raises(ValueError, match="timeout_s"):
        build_backend("openai", {"timeout_s": 0})
    with pytest.raises(ValueError, match="unknown setting"):
        build_backend("openai", {"api_key": "literal keys are not accepted"})


def test_parse_revision_and_prompt():
    comp = COMP[0]
    assert parse_revision(revision("q x", "a y"), comp) == Sample("s0", "answer briefly", "q x", "a y")
    assert parse_revision("[answer]: just this", Sample("n", "", "", "z")).output == "just this"
    for garbage in (None, "", "I cannot help", "[Question] only a question", revision("", "a")):
        assert parse_revision(garbage, comp) is None
    messages = build_messages(ORIG[0], comp, [COMP[1]], [("[Answer]\nbad try", 0.42)], 0.9, 4, 0.1)
    user = messages[1]["content"]
    assert "Original:" in user and ORIG[0].output in user and "Compressed (4 words)" in user
    assert COMP[1].output in user and "bad try" in user and "0.420" in user and "0.90" in user


def test_loop_passes_rewrites_sends_key_and_counts(server_factory, monkeypatch):
    # Revisions that restore the key words pass the gate at round 1; sample s2 gets garbage at round 1 and a
    # good one at round 2, with its failed attempt as a negative.
    def reply(body, call):
        user = body["messages"][1]["content"]
        i = int(user.split("what does drug ")[1][0])
        if i == 2 and "Earlier attempts" not in user:
            return 200, revision(f"drug {i} treat", "garbage words only"), 0
        return 200, revision(f"drug {i} treat", f"drug {i} treats fever adults"), 0

    server = server_factory(reply)
    monkeypatch.setenv("MY_KEY", "sekret")
    backend = _backend(server.url, api_key_env="MY_KEY", model="tiny")
    out = rewrite_failures(backend, ORIG, COMP, overlap_gate(ORIG, COMP), [COMP[0]], overlap_gate, 0.7,
                           rounds=3, tolerance=1.0)
    assert out.passed == [True, True, True]
    assert [r["tried"] for r in out.rounds] == [3, 1] and [r["passed"] for r in out.rounds] == [2, 1]
    assert out.attempts == 4 and all(s.output.endswith("fever adults") for s in out.samples)
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekret" and body["model"] == "tiny"
    assert "garbage words only" in server.requests[-1][2]["messages"][1]["content"]  # negative example


def test_loop_stops_at_round_limit_and_keeps_best_attempt(server_factory):
    answers = iter(["drug 0 treats", "drug 0 x", "zzz"])  # best is the first; none reaches 0.95
    lock = threading.Lock()

    def reply(body, call):
        with lock:
            return 200, revision("what does drug 0", next(answers)), 0

    server = server_factory(reply)
    start = overlap_gate(ORIG[:1], COMP[:1])
    out = rewrite_failures(_backend(server.url), ORIG[:1], COMP[:1], start, [], overlap_gate, 0.95,
                           rounds=3, tolerance=1.0)
    assert out.passed == [False] and len(out.rounds) == 3 and len(server.requests) == 3
    assert out.samples[0].output == "drug 0 treats" and out.scores[0] > start[0]


def test_too_long_revision_is_not_accepted(server_factory):
    server = server_factory(lambda body, call: (200, revision(ORIG[0].input, ORIG[0].output), 0))  # a copy
    out = rewrite_failures(_backend(server.url), ORIG[:1], COMP[:1], [0.3], [], overlap_gate, 0.9, rounds=1,
                           tolerance=0.1)
    assert out.passed == [False] and out.rounds[0]["too_long"] == 1 and out.samples[0] == COMP[0]


def test_timeouts_garbage_and_errors_leave_samples_at_best_attempt(server_factory):
    def reply(body, call):
        user = body["messages"][1]["content"]
        i = int(user.split("what does drug ")[1][0])
        return [(200, None, 0), (200, "no sections here", 0), (200, "slow", 3.0)][i]  # bad JSON, garbage, timeout

    server = server_factory(reply)
    backend = _backend(server.url, timeout_s=0.5, max_retries=1)
    started = time.perf_counter()
    scores = overlap_gate(ORIG, COMP)
    out = rewrite_failures(backend, ORIG, COMP, scores, [], overlap_gate, 0.9, rounds=2)
    assert time.perf_counter() - started < 8
    assert out.samples == COMP and out.scores == scores and out.passed == [False] * 3
    assert [r["no_reply"] for r in out.rounds] == [2, 2] and backend.errors == 4
    assert len(server.requests) == 2 * (2 * 2) + 2  # retried: bad JSON and timeout twice per round


def test_retries_with_backoff_then_succeeds(server_factory):
    server = server_factory(lambda body, call: (503, "busy", 0) if call < 3 else (200, "ok", 0))
    backend = OpenAIBackend(OpenAIBackend.Settings(base_url=server.url, max_retries=3, backoff_s=0.05))
    started = time.perf_counter()
    assert backend.generate([[{"role": "user", "content": "hi"}]]) == ["ok"]
    assert len(server.requests) == 3 and time.perf_counter() - started >= 0.05 + 0.1
    server400 = server_factory(lambda body, call: (400, "bad", 0))
    assert OpenAIBackend(OpenAIBackend.Settings(base_url=server400.url, max_retries=3, backoff_s=0)).generate(
        [[{"role": "user", "content": "x"}]]) == [None]
    assert len(server400.requests) == 1  # client errors are not retried


def test_concurrent_requests(server_factory):
    active, peak, lock = [0], [0], threading.Lock()

    def reply(body, call):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return 200, "x", 0

    server = server_factory(reply)
    backend = _backend(server.url, concurrency=4)
    assert backend.generate([[{"role": "user", "content": str(i)}] for i in range(8)]) == ["x"] * 8
    assert peak[0] == 4


def test_compress_dataset_sends_failures_to_the_rewriter(server_factory, tiny_pair, monkeypatch):
    """End to end with the real scorer: failures go to the server; garbage leaves them counted, never lost."""
    import damoc.compression.gate as gate
    from damoc.compression import compress_dataset

    monkeypatch.setattr(gate, "gate_scores", lambda o, c, *a, **k: overlap_gate(o, c))
    server = server_factory(lambda body, call: (200, "garbage", 0))
    samples = [Sample(f"r{i}", "answer the question", "the patient reported a mild headache and was given rest "
                      f"and fluids {i}", "the treatment reduces fever within two days in most adults") for i in range(3)]
    common = dict(scorer_model=str(tiny_pair[0]), rate=0.5, bertscore_threshold=0.99, rewriter="openai",
                  rewriter_options={"base_url": server.url, "max_retries": 0}, rewrite_rounds=2)
    out, stats = compress_dataset(samples, **common)
    assert out == samples and stats["fell_back"] == 3 and stats["still_failing"] == 3
    assert [r["tried"] for r in stats["rewrite_rounds"]] == [3, 3] and stats["rewrite_attempts"] == 6
    out, stats = compress_dataset(samples, gate_failure="best_attempt", **common)
    assert stats["best_attempt"] == 3 and all(o.id == s.id for o, s in zip(out, samples))
    assert stats["token_ratio"] < 0.75


def test_local_backend_generates_in_process(tiny_pair):
    backend = build_backend("local", {"max_new_tokens": 4}, default_model=str(tiny_pair[1]))
    replies = backend.generate([build_messages(ORIG[0], COMP[0], [], [], 0.9, 4, 0.1)])
    assert len(replies) == 1 and isinstance(replies[0], str) and backend.errors == 0
    out = rewrite_failures(backend, ORIG[:1], COMP[:1], [0.1], [], overlap_gate, 0.9, rounds=1)
    assert out.samples == COMP[:1] and out.rounds[0]["tried"] == 1  # random model: garbage, best kept


def test_endpoint_and_model_from_the_cluster_defaults_when_not_set(server_factory, monkeypatch):
    server = server_factory(lambda body, call: (200, "ok", 0))
    monkeypatch.setenv("DAMOC_REWRITER_URL", server.url)  # the Helm chart's damoc-defaults ConfigMap
    monkeypatch.setenv("DAMOC_REWRITER_MODEL", "served-rewriter")
    assert OpenAIBackend(OpenAIBackend.Settings()).generate([[{"role": "user", "content": "hi"}]]) == ["ok"]
    assert server.requests[0][2]["model"] == "served-rewriter"
    other = server_factory(lambda body, call: (200, "set", 0))
    explicit = OpenAIBackend(OpenAIBackend.Settings(base_url=other.url, model="m"))
    assert explicit.generate([[{"role": "user", "content": "hi"}]]) == ["set"]  # a setting wins over the env
    assert other.requests[0][2]["model"] == "m" and len(server.requests) == 1
