"""Training: one loop (loop.py) shared by every trainer, which supplies a `Task` (var_task.py, tokenizer_task.py)."""
