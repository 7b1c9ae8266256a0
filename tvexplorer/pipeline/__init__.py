"""Writing caches: building one from a base model and task data, or importing fine-tuned checkpoints."""
