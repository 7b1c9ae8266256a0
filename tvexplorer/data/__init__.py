"""Task data: splits and batching, the real CLIP benchmarks (datasets.json), image folders, the
procedural demo world, and the data sources that load a task from its stored spec. Built on core only."""
