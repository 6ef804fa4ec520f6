"""torchslim: structured channel pruning, fine-tuning and deployment of image classifiers."""

from torchslim._version import __version__
from torchslim.pruning.prune import PruneReport, PruneResult, analyze, prune

__all__ = ["PruneReport", "PruneResult", "__version__", "analyze", "prune"]
