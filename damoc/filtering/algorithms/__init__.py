"""Numeric cores of the stage-1 filtering methods: pure functions, no registry, no KFP.

Each takes embeddings / scores / samples and returns sample indices; the filter registry wraps them.
GraphCut's exact O(n*d) greedy lives in damoc.filtering.graphcut (`graphcut_greedy`) and is reused here.
"""
from damoc.filtering.algorithms.dq import dq_bins, dq_select
from damoc.filtering.algorithms.facility_location import facility_location_greedy, facility_location_value
from damoc.filtering.algorithms.kcenter import covering_radius, kcenter_greedy
from damoc.filtering.algorithms.quality import deita_select, ifd_scores, lma_select, superfiltering_select

__all__ = ["covering_radius", "deita_select", "dq_bins", "dq_select", "facility_location_greedy",
           "facility_location_value", "ifd_scores", "kcenter_greedy", "lma_select", "superfiltering_select"]
