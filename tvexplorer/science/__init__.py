"""What is computed on a cache: fine-tuning and the full-batch gradient, evaluation of merges,
alignment, the instant preview, ATM, the SGD theory record and linear probes. Built on core,
merging, models and data."""
