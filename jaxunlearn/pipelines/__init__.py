"""Pipelines: the commands' work as Python functions (unlearn, finetune and continual
unlearning; evaluate, aggregate and compare; the demo). They compose the layers below;
nothing below imports them."""
