"""`outbox bench`: scenarios that measure `outbox` against its ceilings, in one run.

Each scenario reports its own figure and, measured in the same run, the
ceiling it is held against (a bare INSERT for enqueue, ...), and the ratio.
Figures are medians of several rounds; the machine is noisy.
"""
