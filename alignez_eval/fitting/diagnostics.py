"""What a fit can tell about its own data before any evaluation is spent on it.

- Pair quality (judge/pair_quality.py, a judge's job): a judge's verdict of each self-generated helpful answer against its harmful twin. The
  method assumes the model's "helpful" answer *is* the better one; where it is not (quality near or
  below 50%), Θ_help points at noise or at the wrong side, and the edit is unlikely to help.
  Identical or empty pairs are ties: a model that answers both prompts alike scores 50%.
- Gate activity: per layer, the share of the fitted directions the query gate lets through on the
  fit's own queries (⟨q̂, θ⟩ ≤ 0 for the paper's gate). A gate that is almost always shut leaves the
  edit with nothing to do; one that is always open is no gate.
- `data_verdict` turns those and the per-layer survivors of the cosine filter into one line.

None of this enters the artifact (its sha256 is its identity); it goes to the fit report beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.config import EditConfig
from alignez_eval.editing.gates import capture_query_states, query_gates
from alignez_eval.editing.plan import prepare_plan
from alignez_eval.editing.rules import get_rule

# pair quality bands for the one-line verdict (share of pairs whose helpful answer wins, ties half)
LIKELY_HELPS = 0.6
UNLIKELY_BELOW = 0.55


def gate_activity(model: torch.nn.Module, tokenizer: Any, edit: Edit, prompts: list[str],
                  layers_path: str | None = None, batch_size: int = 8) -> dict[str, Any] | None:
    """Per layer, the share of directions the artifact's gate (the paper's when it has none) keeps on
    `prompts`, read at each prompt's last token as at inference; None for an ungated rule."""
    if not get_rule(edit.meta.rule).gated or not prompts:
        return None
    gate = edit.meta.gate if edit.meta.gate != "none" else "paper"
    plan = prepare_plan(edit, EditConfig(layers="all", gate=gate), model, layers_path)
    sums = {i: 0.0 for i in plan.hook_layers}
    per_query: list[float] = []
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every row's last prompt token at position −1, as in generation
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(device)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            qpos = torch.full((ids.shape[0],), ids.shape[1] - 1, device=device)
            states = capture_query_states(model, plan, lambda ids=ids, mask=mask: model(input_ids=ids,
                                                                                        attention_mask=mask), qpos)
            gates = query_gates(plan, states)
            open_rows = torch.zeros(ids.shape[0])
            k_total = 0
            for i in plan.hook_layers:
                kept = torch.cat([gates.harm[i], gates.help[i]], dim=1).float().cpu()
                k = kept.shape[1]
                if k:
                    sums[i] += float(kept.mean(dim=1).sum())
                    open_rows += kept.sum(dim=1)
                    k_total += k
            per_query.extend((open_rows / max(k_total, 1)).tolist())
    finally:
        tokenizer.padding_side = pad_side
    n = len(prompts)
    return {"gate": gate, "queries": n, "open_by_layer": {str(i): round(v / n, 4) for i, v in sums.items()},
            "open_mean": round(float(np.mean(per_query)), 4), "open_by_query": [round(x, 4) for x in per_query]}


def data_verdict(quality: dict[str, Any] | None, counts: dict[str, Any], gates: dict[str, Any] | None,
                 num_layers: int) -> str:
    """One line a user reads before spending compute on an evaluation."""
    parts = []
    edited = len(counts.get("layers_edited", []))
    layers = f"{edited} of {num_layers} layers kept enough pairs after the cosine filter"
    advice = ""
    if quality is not None and quality.get("quality") is not None:
        q, (lo, hi) = quality["quality"], quality["ci95"]
        parts.append(f"helpful beats harmful in {q:.0%} [{lo:.0%}, {hi:.0%}] of {quality['judged']} pairs "
                     f"({str(quality['judge']).split(' (')[0]})")
        if hi < UNLIKELY_BELOW:
            advice = ("the model's own 'helpful' answers are not better than its 'harmful' ones, so the edit is "
                      "unlikely to help; try real pairs (--pref-data), other --keywords or a larger model")
        elif lo >= LIKELY_HELPS:
            advice = "the pairs carry a real preference"
        else:
            advice = "the pairs carry at most a weak preference: expect a small effect at best"
    parts.append(layers)
    if gates is not None:
        parts.append(f"the {gates['gate']} gate keeps {gates['open_mean']:.0%} of the directions on the fit's queries")
    line = "data verdict: " + "; ".join(parts)
    return line + (f" — {advice}" if advice else "")
