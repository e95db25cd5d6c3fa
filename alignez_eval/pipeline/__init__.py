"""The end-to-end job: `compare` (generate → fit → judge → report, every step cached), `sweep`
(the same over edit settings on one loaded model, logged to wandb) and `demo` (compare on the
embedded offline models). See `steps` for the cache and manifest."""
