"""The registry of rewriter backends (the paper's iterative LLM rewriting of gate failures).

Empty until a backend is implemented: the run configuration rejects `compression.rewrite: true` while it is,
instead of accepting a setting that would do nothing.
"""
from __future__ import annotations

from damoc.registry import Registry

REWRITERS: Registry = Registry("rewriter backend")
