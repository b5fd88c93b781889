"""emflow: emergent-misalignment experiments as a Snakemake pipeline.

One module per stage (datasets, train, generate, judge, aggregate, figures, report); each exposes plain
functions over files plus a small CLI that the rules call (see ``emflow.cli``).
"""

__version__ = "0.1.0"
