"""Many-model merge (task arithmetic, TIES, DARE/DROP, geometric median, TGMD), key by key, with memory bounded
by a budget whatever the number of models. Methods in ``methods`` (one table), inputs in ``sources``, the
recipe in ``recipe``, the driver in ``streaming``; ``python -m lune.merge --help`` runs it headless."""
from .methods import METHODS, STOP_RULES, MergeParams, keep_mask, mask_seed
from .recipe import RECIPE_METADATA_KEY
from .streaming import DEFAULT_MEMORY_BUDGET_GIB, merge_models

__all__ = ["DEFAULT_MEMORY_BUDGET_GIB", "METHODS", "MergeParams", "RECIPE_METADATA_KEY", "STOP_RULES", "keep_mask",
           "mask_seed", "merge_models"]
