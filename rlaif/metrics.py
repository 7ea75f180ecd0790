"""The old import path of the labels-table metrics, kept working: every name now lives in ``rlaif.analysis``."""

from rlaif.analysis.agreement import (
    ai_human_kappa,
    ai_vs_annotators,
    alignment,
    alignment_by_group,
    alignment_ci,
    annotator_vs_majority_cases,
    cohens_kappa,
    fleiss_kappa,
    human_agreement,
    labeler_agreement,
    strict_majority,
    tie_counts,
)
from rlaif.analysis.biases import length_bias, position_bias
from rlaif.analysis.calibration import (
    EPS,
    accuracy_by_confidence,
    apply_temperature,
    calibration,
    fit_temperature,
    temperature_scaling,
)
from rlaif.analysis.intervals import mean_ci, paired_difference_ci, win_rate
from rlaif.labels_table import scored
from rlaif.pairs import TIE
from rlaif.soft_labels import choice

__all__ = ["EPS", "TIE", "accuracy_by_confidence", "ai_human_kappa", "ai_vs_annotators", "alignment",
    "alignment_by_group", "alignment_ci", "annotator_vs_majority_cases", "apply_temperature", "calibration",
    "choice", "cohens_kappa", "fit_temperature", "fleiss_kappa", "human_agreement", "labeler_agreement",
    "length_bias", "mean_ci", "paired_difference_ci", "position_bias", "scored", "strict_majority",
    "temperature_scaling", "tie_counts", "win_rate"]
