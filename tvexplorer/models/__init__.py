"""CLIP models: open_clip architectures and their zero-shot heads, flat parameter vectors, and
import of task-arithmetic checkpoints. Built on core only."""
