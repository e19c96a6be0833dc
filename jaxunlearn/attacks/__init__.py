"""Attacks on the forgetting (Liu et al.'s robustness assessment): relearning, weight
quantization, prompt probes and sampled extraction, and the recovery summary."""
