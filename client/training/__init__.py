"""Training a LoRA adapter on a frozen base: the models and losses, DP-SGD with Opacus, and the
task-vector spec (what both a learnware's build and a consumer's search train)."""
