"""continualcode: a terminal coding agent that learns from its user's corrections.

One tool call per turn; a denial with a correction triggers one SDPO step on LoRA weights
(the model conditioned on the correction is its own teacher), then the agent retries.
"""

__version__ = "0.1.0"
