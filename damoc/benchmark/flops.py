"""Cost in FLOPs of the benchmark's runs: the product's cost model (damoc.cost), applied to the statistics every
stage reports. Kept as a module so the benchmark's imports stay as they were; `damoc estimate` projects with
the same functions, so a projection and a measured benchmark run are counted alike."""
from __future__ import annotations

from damoc.cost import (MINILM_PARAMS, WORD_PIECES_PER_WORD, compress_flops, eval_flops, filter_flops,  # noqa: F401
                        prune_flops, train_flops)
