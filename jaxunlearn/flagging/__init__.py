"""Chen et al.'s evaluator: judges that flag which of a model's outputs to unlearn
(hallucinated, private, harmful), each decision explained per row."""
