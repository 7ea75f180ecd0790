"""The old import path of ``rlaif.training.reward_model``, kept for scripts and notebooks that use it:
``import rlaif.reward_model`` gives that very module."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("rlaif.training.reward_model")
