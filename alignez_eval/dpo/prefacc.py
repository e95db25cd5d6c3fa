"""Preference accuracy: a judge-free, exact metric on held-out real preference pairs.

For a system S (a model, with or without an adapter, with or without an edit) and a pair
(prompt, chosen, rejected), S's margin is log p_S(chosen | prompt) − log p_S(rejected | prompt),
summed over the answer's tokens. S's preference accuracy against the base model B is the share of
pairs where S's margin exceeds B's — DPO's implicit-reward accuracy, since
(log p_S − log p_B)(chosen) > (log p_S − log p_B)(rejected) ⇔ margin_S > margin_B.

Margins come from lm-eval's loglikelihood through `alignez-hf`, so an edit applies exactly as it
does in any loglikelihood task (its `positions` setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
from alignez_eval.dpo.data import PrefPair


def truncate_pairs(pairs: list[PrefPair], tokenizer: Any, max_length: int) -> list[PrefPair]:
    """Each answer cut to its first tokens so that prompt + answer fit `max_length` tokens (as DPO
    training cuts them); a pair whose prompt alone fills it keeps 8 answer tokens."""
    from dataclasses import replace

    out = []
    for p in pairs:
        room = max(8, max_length - len(tokenizer(p.prompt, add_special_tokens=False).input_ids))

        def cut(text: str, room: int = room) -> str:
            ids = tokenizer(" " + text, add_special_tokens=False).input_ids
            return text if len(ids) <= room else tokenizer.decode(ids[:room]).strip()

        out.append(replace(p, chosen=cut(p.chosen), rejected=cut(p.rejected)))
    return out


def requests_for(pairs: list[PrefPair]) -> list[Any]:
    """Two loglikelihood requests per pair: (prompt, " chosen"), (prompt, " rejected")."""
    from lm_eval.api.instance import Instance

    out = []
    for i, p in enumerate(pairs):
        for j, answer in enumerate((p.chosen, p.rejected)):
            out.append(Instance("loglikelihood", {"id": p.id}, (p.prompt, " " + answer), 2 * i + j))
    return out


def pair_margins(lm: Any, pairs: list[PrefPair], progress: bool = True) -> list[float]:
    """Each pair's margin under `lm` (an lm-eval LM, e.g. alignez-hf with its current edit)."""
    results = lm.loglikelihood(requests_for(pairs), disable_tqdm=not progress)
    ll = [float(r[0]) for r in results]
    return [ll[2 * i] - ll[2 * i + 1] for i in range(len(pairs))]


@dataclass
class PrefAccuracy:
    accuracy: float  # share of pairs with margin > the base's margin
    ci: tuple[float, float]  # paired bootstrap 95% interval over pairs
    n: int
    mean_margin_gain: float  # mean (margin − base margin), nats

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "ci_low": self.ci[0], "ci_high": self.ci[1], "n": self.n,
                "mean_margin_gain": self.mean_margin_gain}


def preference_accuracy(margins: list[float], base_margins: list[float], *, n_boot: int = 2000,
                        seed: int = 0) -> PrefAccuracy:
    m, b = np.asarray(margins, dtype=np.float64), np.asarray(base_margins, dtype=np.float64)
    if m.shape != b.shape or m.size == 0:
        raise ValueError(f"margins of {m.size} and {b.size} pairs: need the same, non-empty list of pairs")
    wins = (m > b).astype(np.float64)
    boots = wins[bootstrap_indices(m.size, n_boot, seed)].mean(axis=1)
    return PrefAccuracy(accuracy=float(wins.mean()), ci=percentile_ci(boots), n=int(m.size),
                        mean_margin_gain=float((m - b).mean()))
