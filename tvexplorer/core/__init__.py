"""The bottom layer: the cache format (layout of parameters, manifest, memory-mapped tensor files,
writer lock, verified hash stamps, hub locations), work copies, and the rules every layer shares
(finite numbers and ranges, one-line errors, the default device). It imports nothing of tvexplorer's above it."""
