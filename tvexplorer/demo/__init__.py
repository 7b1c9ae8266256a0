"""The deterministic demo world: a tiny CLIP pretrained on procedurally generated tasks."""
