"""Channel pruning in Gram form (DESIGN.md section 3): second moments of the stacked branch inputs, the
LASSO channel selection with an exact budget, baselines, and the closed-form refit.

Typical use for one layer (scheme full)::

    acc = SecondMoment(B * c)
    for batch in calibration_batches:
        acc.update(Z_self_batch, Z_neigh_batch)          # stacked branch inputs
    S = acc.moment
    G, q, y_sq = gram_from_moments(S, [W_self, W_neigh], form="sum")
    keep = select_channels(G, q, k, y_sq=y_sq)
    W_self_new, W_neigh_new = refit(S, keep, [W_self, W_neigh], form="sum")
"""
from .gram import (SecondMoment, branch_penalty, cross_linear_term, gram_from_moments,
                   split_branch_coordinates)
from .refit import output_relative_error, refit
from .lasso import lambda_max, select_channels
from .greedy import select_greedy, select_greedy_or_refined
from .baselines import select_magnitude, select_random
from .prune import finetune, layer_second_moment, prune
from . import report, target

__all__ = ["SecondMoment", "gram_from_moments", "cross_linear_term", "branch_penalty", "split_branch_coordinates",
           "select_channels", "select_greedy", "select_greedy_or_refined", "select_random", "select_magnitude",
           "lambda_max", "refit", "output_relative_error", "prune", "finetune", "layer_second_moment", "report",
           "target"]
