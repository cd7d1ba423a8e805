"""Learning from corrections: the SDPO losses (pure tensor functions), the teacher context, one update.

The learner knows nothing of agents or terminals: it turns a student's completion and its teacher's
scores into one optimizer step on the adapter.
"""
