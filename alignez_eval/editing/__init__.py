"""The method at inference: the edit rules, plan, gates, positions, hooks, architecture maps, the artifact.
Pure torch; nothing here imports lm-eval. Fit-time code (Φ capture, subspaces, probe) is in `fitting/`."""
