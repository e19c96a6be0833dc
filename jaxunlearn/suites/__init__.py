"""Benchmarks beyond TOFU: MUSE (corpus unlearning: VerbMem, KnowMem, PrivLeak), multiple
choice (WMDP, MMLU, lm-eval's prompts and numbers) and an lm-eval model adapter."""
