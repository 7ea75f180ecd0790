"""Labeling templates shipped with rlaif (installed as the package ``rlaif.prompts``).

One folder per task: task.yaml, preamble_base.jinja, preamble_detailed.jinja,
sample.jinja, ending.jinja. See README.md in this folder.
"""
