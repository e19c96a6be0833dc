"""jaxunlearn: make a large language model forget, in JAX/Flax, and measure that it forgot.

model, tokenizer = jaxunlearn.load_pretrained("path/or/hub-id")
logits = model(input_ids, attention_mask=mask)          # [B, T, V]
jaxunlearn.save_pretrained(model, tokenizer, "out", format="hf")
"""

from .checkpoints.api import load_pretrained, load_tokenizer, save_pretrained
from .pipelines.evaluate import aggregate_evaluation
from .errors import CheckpointError, ConfigError, DataError, JaxUnlearnError
from .models.config import ModelConfig
from .models.registry import create_model, num_parameters, supported_model_types

__version__ = "0.1.0"

__all__ = [
    "load_pretrained",
    "load_tokenizer",
    "save_pretrained",
    "aggregate_evaluation",
    "create_model",
    "num_parameters",
    "supported_model_types",
    "ModelConfig",
    "JaxUnlearnError",
    "CheckpointError",
    "ConfigError",
    "DataError",
]
