"""DPO on real preference data (the paper's second experiment): preference files and the pool split
(`data`), LoRA training on TRL's DPOTrainer (`train`, the optional `[dpo]` extra), the judge-free
preference accuracy (`prefacc`) and the expedite experiment (`expedite`)."""
