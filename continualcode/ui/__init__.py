"""Everything the user sees: the terminal, per-token heatmaps, learning-curve plots, metric readouts.

Nothing here decides anything: these modules only render data the agent and learner hand them.
"""
