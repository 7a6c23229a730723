"""Prognosis: survival hazards linked to the dynamics or to a marker's trajectory, predictions,
and their accuracy on held-out patients (DESIGN.md section 5)."""

from ._accuracy import (
    DynamicAUC,
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
    uno_c,
)
from ._censoring import KaplanMeier, censoring_distribution, kaplan_meier
from ._data import FAMILIES, JointArrays, JointData, JointSpec, joint_data, read_joint_tables
from ._fit_joint import JointFit, build_joint_tree, fit_joint, fit_joint_run
from ._formula import ALPHA_NAMES, ASSOCIATIONS, MarkerDesign, MarkerFormulas, parse_assoc
from ._hazard import BASELINES, BaselineHazard, BSplineHazard, PiecewiseHazard, WeibullHazard
from ._joint import JointModel, joint_model
from ._outcomes import Outcomes
from ._predict import (
    TIME_UNITS,
    PredictionError,
    SurvivalPrediction,
    landmark_survival,
    open_joint_run,
    predict_survival,
)
from ._predict_plot import plot_prediction
from ._quadrature import QUADRATURE_NODES, gauss_legendre
from ._rule import (
    CELLSEARCH_THRESHOLD,
    CELLSEARCH_VOLUME_ML,
    COMPARISON_COLUMNS,
    cellsearch_rule,
    compare_with_rule,
    rule_scores,
    rule_survival,
)
from ._simulate_joint import JointTruth, simulate_joint

__all__: list[str] = [
    "ALPHA_NAMES",
    "ASSOCIATIONS",
    "BASELINES",
    "CELLSEARCH_THRESHOLD",
    "CELLSEARCH_VOLUME_ML",
    "COMPARISON_COLUMNS",
    "FAMILIES",
    "QUADRATURE_NODES",
    "TIME_UNITS",
    "BSplineHazard",
    "BaselineHazard",
    "DynamicAUC",
    "JointArrays",
    "JointData",
    "JointFit",
    "JointModel",
    "JointSpec",
    "JointTruth",
    "KaplanMeier",
    "MarkerDesign",
    "MarkerFormulas",
    "Outcomes",
    "PiecewiseHazard",
    "PredictionError",
    "SurvivalPrediction",
    "WeibullHazard",
    "brier_score",
    "build_joint_tree",
    "cellsearch_rule",
    "censoring_distribution",
    "compare_with_rule",
    "cumulative_dynamic_auc",
    "fit_joint",
    "fit_joint_run",
    "gauss_legendre",
    "integrated_brier_score",
    "joint_data",
    "joint_model",
    "kaplan_meier",
    "landmark_survival",
    "open_joint_run",
    "parse_assoc",
    "plot_prediction",
    "predict_survival",
    "read_joint_tables",
    "rule_scores",
    "rule_survival",
    "simulate_joint",
    "uno_c",
]
