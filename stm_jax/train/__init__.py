"""Training: the optimizer recipe, the train state and its pure step, the loop, its logs."""
