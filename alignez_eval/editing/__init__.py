"""The method's math and mechanics: subspaces, the edit rules, hooks, architecture maps, the artifact.
Pure torch; nothing here imports lm-eval."""
