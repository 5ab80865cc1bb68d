"""The hacknip plugin: registers this package's heads as light specs (no torch, boosting library or sklearn
is imported until a head is created). The linear ``ridge`` head comes with hacknip-core itself."""

from __future__ import annotations

import hacknip
from hacknip.plugins.head import CLASSIFICATION, REGRESSION, HeadSpec

BOTH_TASKS = frozenset({REGRESSION, CLASSIFICATION})

HEAD_SPECS = (
    HeadSpec(
        name="lightgbm",
        factory="hacknip_heads.lightgbm_head:LightGBMHead",
        task_kinds=BOTH_TASKS,
        description="LightGBM gradient-boosted trees; a strong default for tabular embeddings",
    ),
    HeadSpec(
        name="xgboost",
        factory="hacknip_heads.xgboost_head:XGBoostHead",
        task_kinds=BOTH_TASKS,
        description="XGBoost gradient-boosted trees (hist tree method)",
    ),
    HeadSpec(
        name="mlp",
        factory="hacknip_heads.mlp:MLPHead",
        task_kinds=BOTH_TASKS,
        description="PyTorch multilayer perceptron with early stopping on a held-out 10% split",
    ),
    HeadSpec(
        name="modnet",
        factory="hacknip_heads.modnet:MODNetHead",
        task_kinds=BOTH_TASKS,
        description="MODNet in PyTorch: NMI relevance-redundancy feature selection + feed-forward network (the paper's head)",
    ),
)


@hacknip.hookimpl
def register_heads(register):
    for spec in HEAD_SPECS:
        register(spec)
