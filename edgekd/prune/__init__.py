"""Structured pruning on Torch-Pruning (DepGraph): whole channels removed step by step, each step sized by MACs,
params or measured latency (see edgekd.prune.pruner and edgekd.prune.latency; the `prune` stage drives them)."""
