"""Understand the data and the model: a data report before training (`data_report`), the interpretation of a
trained classifier (`interpret`: top losses, confusion, per-class errors, word attributions) and which texts to
label next (`suggest`). Each writes its files atomically; the CLI commands `report`, `interpret` and `suggest`
call these functions."""

from .interpret import Attribution, Interpretation, attribute, integrated_gradients, interpret
from .report import DataReport, Finding, data_report, near_duplicate_pairs, read_report
from .suggest import Suggestion, classifier_features, lm_features, margin_uncertainty, select, suggest

__all__ = ["Attribution", "DataReport", "Finding", "Interpretation", "Suggestion", "attribute", "classifier_features",
           "data_report", "integrated_gradients", "interpret", "lm_features", "margin_uncertainty",
           "near_duplicate_pairs", "read_report", "select", "suggest"]
