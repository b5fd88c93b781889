"""The Snakemake controller on a cluster's login node: keeping its own CPU time under the node's limit."""
