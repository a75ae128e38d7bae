"""``make demo``: the whole RLHF loop on one machine with simulated labellers, and a report.

    python -m demo [--rounds 2] [--overoptimization]      # the loop
    python -m demo overoptimization [--run DIR]           # add the tiny-KL run to a report

Core: :func:`demo.run.run`, given a :class:`demo.config.Profile` (every stage's section of the profile,
loaded once; ``DemoConfig`` is the section ``demo``).
"""
