"""hacknip-core's own plugin: the heads that come with the core package, so that hacknip alone can run a job.

The plugin manager registers this module before any entry point (as simonw/llm registers its default plugins), under
the distribution ``hacknip-core``; it is listed and resolved like any installed plugin. Like every plugin module it
registers light specs only: scikit-learn is imported when a head is created.
"""

from __future__ import annotations

from hacknip.plugins.head import CLASSIFICATION, REGRESSION, HeadSpec
from hacknip.plugins.hookspecs import hookimpl

HEAD_SPECS = (
    HeadSpec(
        name="ridge",
        factory="hacknip.plugins.ridge_head:RidgeHead",
        task_kinds=frozenset({REGRESSION, CLASSIFICATION}),
        description="Linear baseline: RidgeCV (regression) or LogisticRegressionCV (classification)",
    ),
    HeadSpec(
        name="ensemble",
        factory="hacknip.plugins.ensemble_head:EnsembleHead",
        task_kinds=frozenset({REGRESSION, CLASSIFICATION}),
        description="The averaged predictions of several heads (members='lightgbm+xgboost', params per member), or of one "
                    "head over several seeds (members='modnet', seeds=5)",
    ),
)


@hookimpl
def register_heads(register):
    for spec in HEAD_SPECS:
        register(spec)
