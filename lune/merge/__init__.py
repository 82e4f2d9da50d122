"""Streaming many-model merge (task arithmetic, TIES, DARE/DROP, geometric median, TGMD) with memory independent
of the number of models. Math in ``methods``, inputs in ``sources``, output in ``writer``, driver in
``streaming``; ``python -m lune.merge --help`` runs it headless."""
from .methods import METHODS, MergeParams, keep_mask, mask_seed
from .streaming import RECIPE_METADATA_KEY, merge_models

__all__ = ["METHODS", "MergeParams", "RECIPE_METADATA_KEY", "keep_mask", "mask_seed", "merge_models"]
