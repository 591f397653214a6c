"""Linear-attention transformers trained on masked-block completion, and the extraction of the
algorithm they learn (EAGLE). Depends on the solver side (kernels, control, distributed runtime);
nothing there imports this package."""
from .config import REGIMES, TrainConfig, load_train_config, train_config_from_dict
from .transformer import LinearTransformer, build_model

__all__ = ["REGIMES", "TrainConfig", "load_train_config", "train_config_from_dict",
           "LinearTransformer", "build_model"]
