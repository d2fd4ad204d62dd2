"""Deployment kit for Qwen3.6-27B INT4 AutoRound (and models like it) on vLLM.

The core (profile -> plan -> argv) is pure; probes of the GPU, the installed vLLM and the model
directory sit at the edges (``serve.launch.facts``); exec is ``serve.commands.launch``.
"""

__version__ = "0.1.0"
