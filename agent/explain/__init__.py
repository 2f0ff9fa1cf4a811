"""Explanations grounded in the user's own history: the explainer component and its checks."""

from __future__ import annotations

from .checks import check_reason, parse_reasons
from .explainer import Explainer, ExplainerConfig

__all__ = ["Explainer", "ExplainerConfig", "check_reason", "parse_reasons"]
