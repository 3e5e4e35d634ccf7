"""`qa_filler`: the qa_long demo task wrapped in the filler real domain Q&A carries, with its spans known.

Patient-forum and support data (the paper's PubMedQA-like domains) wrap every fact in greetings, context
nobody needs ("I read about this online and I am worried"), thanks, restated questions ("You asked about X"),
boilerplate disclaimers and sign-offs. Here each row is a qa_long row (question + 2-4 fact sentences) with such
sentences added around the question and the answer. The demo task (`damoc data demo --task qa_filler`,
demo://qa_filler/...) writes the text as written; :func:`filler_dataset` also gives each row's ``filler_spans``
(the added sentences per part, in order) and ``clean`` parts, so an oracle compressor can remove exactly the
filler and nothing else (:func:`oracle_compress`).
"""
from __future__ import annotations

import random
from typing import Any

from damoc.data.schema import Sample

GREETINGS = ("Hello doctor,", "Hi there, I hope you are doing well.", "Good morning.", "Dear doctor,",
             "Hello, and thank you for taking the time to read this.", "Hi,")
CONTEXT = ("I have been reading about this online and I am a bit worried.",
           "My family asked me to write to you about this.", "Sorry if this is a silly question.",
           "I could not find a clear answer anywhere else.", "A friend of mine mentioned it last week.")
THANKS = ("Thanks in advance!", "Many thanks for your help.", "Thank you so much.", "I appreciate any advice.")
OPENERS = ("Thank you for your question.", "That is a very good question.", "Thanks for reaching out to us.",
           "I am happy to help with this.", "Thank you for writing in.")
RESTATE = ("You asked about {x}.", "I understand you would like to know more about {x}.",
           "Your question is about {x}.", "Let me answer your question about {x}.")
BOILERPLATE = ("This information is general and does not replace a visit to your own doctor.",
               "Every patient is different, so please discuss your situation with your care team.",
               "Please note that this answer is for educational purposes only.")
SIGN_OFFS = ("I hope this helps.", "Please do not hesitate to ask if you have more questions.",
             "Best wishes and stay healthy.", "Kind regards, the clinic team.", "Take care.")


def _subject(question: str) -> str:
    """A short restatement target: the question without its final mark, lower-cased first letter."""
    q = question.rstrip("?").strip()
    return q[0].lower() + q[1:] if q else q


def _wrap(rng: random.Random, row: dict[str, str]) -> dict[str, Any]:
    q_parts: list[tuple[str, bool]] = [(rng.choice(GREETINGS), True)]
    if rng.random() < 0.6:
        q_parts.append((rng.choice(CONTEXT), True))
    q_parts.append((row["input"], False))
    if rng.random() < 0.7:
        q_parts.append((rng.choice(THANKS), True))
    a_parts: list[tuple[str, bool]] = [(rng.choice(OPENERS), True)]
    if rng.random() < 0.6:
        a_parts.append((rng.choice(RESTATE).format(x=_subject(row["input"])), True))
    a_parts.append((row["output"], False))
    if rng.random() < 0.5:
        a_parts.append((rng.choice(BOILERPLATE), True))
    a_parts.append((rng.choice(SIGN_OFFS), True))
    return {"instruction": row["instruction"], "input": " ".join(t for t, _ in q_parts),
            "output": " ".join(t for t, _ in a_parts),
            "filler_spans": {"input": [t for t, f in q_parts if f], "output": [t for t, f in a_parts if f]},
            "clean": {"input": row["input"], "output": row["output"]}}


def filler_dataset(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """qa_long's rows (same seed, same facts) with filler around question and answer, each with its
    ``filler_spans`` and ``clean`` (the qa_long input/output)."""
    from damoc.demo.data import _generate_qa_long

    train, evals = _generate_qa_long(n_train, n_eval, seed)
    rng = random.Random(f"qa_filler:{seed}")
    return [_wrap(rng, r) for r in train], [_wrap(rng, r) for r in evals]


def generate_filler(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The demo task's rows: instruction/input/output as written (filler included)."""
    keep = ("instruction", "input", "output")
    train, evals = filler_dataset(n_train, n_eval, seed)
    return [{k: r[k] for k in keep} for r in train], [{k: r[k] for k in keep} for r in evals]


def _remove(text: str, spans: list[str]) -> str:
    out = text
    for span in spans:
        at = out.find(span)
        if at < 0:
            raise ValueError(f"filler span {span!r} not found in {text!r}")
        out = out[:at] + out[at + len(span):]
    return " ".join(out.split())


def oracle_compress(row: dict[str, Any], sample_id: str = "") -> tuple[Sample, Sample]:
    """(original, oracle-compressed) samples of a qa_filler row: the compression removes exactly its filler."""
    spans = row["filler_spans"]
    original = Sample(sample_id, row["instruction"], row["input"], row["output"])
    compressed = Sample(sample_id, row["instruction"], _remove(row["input"], spans.get("input", [])),
                        _remove(row["output"], spans.get("output", [])))
    return original, compressed


def filler_word_share(row: dict[str, Any]) -> float:
    """Share of the row's words (instruction + input + output) that are filler."""
    total = sum(len(row[p].split()) for p in ("instruction", "input", "output"))
    filler = sum(len(s.split()) for part in row["filler_spans"].values() for s in part)
    return filler / total if total else 0.0


# ----------------------------------------------------------------------------------------------------
# edits of known meaning, for calibrating the BERTScore gate (benchmarks/bench_oracle.py)

def _sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def edits(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """{edit: [(edited text, original text)]} over qa_filler rows (texts as Sample.text joins them).

    Meaning-preserving: `oracle` (every filler sentence removed), `half_filler` (a random half of them),
    `filler_swapped` (other filler sentences in place of the row's). Meaning-changing: `content_drop` (the
    oracle compression, minus one of the answer's fact sentences), `fact_swap` (the oracle compression with
    another row's answer), `random_drop` (words deleted uniformly at the oracle's kept fraction, filler or not).
    """
    rng = random.Random(f"filler-edits:{seed}")
    pools = {"input": GREETINGS + CONTEXT + THANKS, "output": OPENERS + BOILERPLATE + SIGN_OFFS}
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in ("oracle", "half_filler", "filler_swapped",
                                                            "content_drop", "fact_swap", "random_drop")}
    for i, row in enumerate(rows):
        original, oracle = oracle_compress(row)
        ref = original.text
        out["oracle"].append((oracle.text, ref))
        spans = row["filler_spans"]
        half = {p: [s for s in spans[p] if rng.random() < 0.5] for p in ("input", "output")}
        out["half_filler"].append((Sample("", row["instruction"], _remove(row["input"], half["input"]),
                                          _remove(row["output"], half["output"])).text, ref))
        swapped = {}
        for part in ("input", "output"):
            text = row[part]
            for span in spans[part]:
                text = text.replace(span, rng.choice([s for s in pools[part] if s != span]), 1)
            swapped[part] = text
        out["filler_swapped"].append((Sample("", row["instruction"], swapped["input"], swapped["output"]).text, ref))
        facts = _sentences(oracle.output)
        drop = rng.randrange(len(facts))
        out["content_drop"].append((Sample("", row["instruction"], oracle.input,
                                           " ".join(f for j, f in enumerate(facts) if j != drop)).text, ref))
        other = rows[(i + 1 + rng.randrange(len(rows) - 1)) % len(rows)] if len(rows) > 1 else row
        out["fact_swap"].append((Sample("", row["instruction"], oracle.input, other["clean"]["output"]).text, ref))
        words = ref.split()
        keep = len(oracle.text.split()) / max(1, len(words))
        out["random_drop"].append((" ".join(w for w in words if rng.random() < keep), ref))
    return out


def filler_mask(row: dict[str, Any]) -> list[bool]:
    """Per word of the row's Sample.text (whitespace split), whether it belongs to a filler span."""
    mask: list[bool] = [False] * len(row["instruction"].split())
    for part in ("input", "output"):
        text, flags = row[part], [False] * len(row[part])
        at = 0
        for span in row["filler_spans"][part]:
            start = text.find(span, at)
            flags[start:start + len(span)] = [True] * len(span)
            at = start + len(span)
        pos = 0
        for word in text.split():
            start = text.find(word, pos)
            mask.append(all(flags[start:start + len(word)]))
            pos = start + len(word)
    return mask
