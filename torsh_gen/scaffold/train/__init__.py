"""``scaffold train``: a standalone PyTorch training project generated from a model.

``lower`` (and its ``lower_*`` op families) turns the IR into the pieces of an
``nn.Module``; ``project`` renders them with the training script, config, docs and tests.
"""

from torsh_gen.scaffold.train.lower import TorchModule, lower_graph
from torsh_gen.scaffold.train.project import TrainScaffold, build_files, scaffold_train

__all__ = ["TorchModule", "TrainScaffold", "build_files", "lower_graph", "scaffold_train"]
