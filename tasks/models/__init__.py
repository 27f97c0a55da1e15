"""Plain PyTorch models of the paper's tasks (the harness converts them with xconv.convert)."""
