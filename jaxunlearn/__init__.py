"""jaxunlearn: LLM unlearning in JAX/Flax."""
