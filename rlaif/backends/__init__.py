"""Engines that score candidate labels. One file per engine; the labeler never branches on engine."""

from rlaif.backends.base import LabelBackend, LabelTokenError

__all__ = ["LabelBackend", "LabelTokenError"]
