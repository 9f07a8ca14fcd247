"""Few-shot meta-learning: episodes, ProtoNet, MAML, Relation Network and the dual-attention meta-learner,
one trainer and one evaluator for all of them.

Importing the package registers every method.
"""
from . import dual_attention, maml, protonet, relation  # noqa: F401  (registers the methods)
from .episodes import Episode, EpisodeSampler
from .methods import create_method, list_methods

__all__ = ["Episode", "EpisodeSampler", "create_method", "list_methods"]
