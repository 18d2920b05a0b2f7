"""QA kernels: ALMA's QA2 verdict for a MOUS's products, and stage scores with their colours."""

from mousflow.science.qa.qa2 import GoalAssessment, QA2Result, assess_goal, qa2_verdict
from mousflow.science.qa.scores import score_colour

__all__ = ["GoalAssessment", "QA2Result", "assess_goal", "qa2_verdict", "score_colour"]
