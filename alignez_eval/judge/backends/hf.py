"""A local transformers chat model as judge, scored by next-token probabilities.

The assistant turn is prefilled with the prompt format's `prefill` ("[[") and one batched forward
pass reads the distribution over the first token of each label: A / B / C(tie) in pairwise mode,
the grades 1..scale in single mode (expected grade = sum_g g * p(g), normalised over the grade
tokens). The label logits are computed in fp32 from the final hidden state even when the weights
are bf16: bf16 logits were seen to round small preference signals away.

Grades must be distinct single tokens after the prefill. Qwen2.5 and Llama-3 tokenizers split
"10" into "1" + "0", which is why the hf backend grades on a 1-9 scale by default (`scale`).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import torch

from alignez_eval.errors import ConfigError
from alignez_eval.judge.backends.base import JudgeRequest, empty_result
from alignez_eval.judge.backends.loading import judge_model
from alignez_eval.judge.spec import JudgeSpec

logger = logging.getLogger(__name__)

def chat_text(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, bool]:
    """Render messages with the tokenizer's chat template. -> (text, template_used). Templates
    without a system role get the system text prepended to the user turn."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
        except Exception:  # noqa: BLE001 - Jinja templates raise arbitrary errors on a system role
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True), True
    text = "\n\n".join(m["content"] for m in messages)
    return f"{text}\n\nAssistant: ", False


def truncate_tokens(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    return tokenizer.decode(ids[:max_tokens]) + " [...]", True


def label_token_ids(tokenizer: Any, prefill: str, labels: list[str]) -> list[int]:
    """The first token of each label as the model would emit it right after `prefill`."""
    base = tokenizer(prefill, add_special_tokens=False)["input_ids"]
    ids = []
    for label in labels:
        full = tokenizer(prefill + label, add_special_tokens=False)["input_ids"]
        if full[: len(base)] == base and len(full) > len(base):
            ids.append(full[len(base)])
        else:  # the label merges with the prefill's last token; fall back to the label alone
            alone = tokenizer(label, add_special_tokens=False)["input_ids"]
            logger.warning("judge label %r merges with prefill %r; using its standalone token", label, prefill)
            ids.append(alone[0])
    if len(set(ids)) != len(ids):
        pieces = [tokenizer.convert_ids_to_tokens(i) for i in ids]
        raise ConfigError(f"judge labels {labels} share first tokens {pieces} in this tokenizer, so they cannot be "
                          "read from one next-token distribution; use a smaller grade scale (scale=9) or other labels")
    return ids


def common_prefix(rows: list[list[int]], min_len: int = 16) -> list[int]:
    """Longest token prefix shared by all rows, leaving each row at least one token of its own;
    [] when shorter than `min_len` (not worth a cache)."""
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for row in rows[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return first[:n] if n >= min_len else []


class HFBackend:
    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.prompt = spec.load_prompt()
        self.calls = 0
        self.model, self.tokenizer = judge_model(spec)
        self.device = next(self.model.parameters()).device
        fmt = self.prompt.format("label")
        self.prefill = str(fmt.get("prefill", ""))
        if spec.mode == "pairwise":
            label_map = fmt.get("labels") or {"A": "A", "B": "B", "tie": "C"}
            self.names = ["A", "B", "tie"]
            self.label_strings = [str(label_map[n]) for n in self.names]
        else:
            self.names = [str(g) for g in range(1, int(spec.scale or 9) + 1)]
            self.label_strings = list(self.names)
        self.label_ids = label_token_ids(self.tokenizer, self.prefill, self.label_strings)
        self._warned_no_template = False
        self._warned_context = False
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_kv: Any = None
        # transformers >= 5.2x renamed forward's `past_key_values` to `cache`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ---------------------------------------------------------------------------------------------
    def render(self, req: JudgeRequest) -> tuple[list[int], bool]:
        """Token ids of the full judge input (chat template + prefill), and whether an answer was cut."""
        cut = self.spec.options.max_answer_tokens
        a, ta = truncate_tokens(self.tokenizer, req.answer_a, cut)
        if req.kind == "pair":
            b, tb = truncate_tokens(self.tokenizer, req.answer_b, cut)
            msgs = self.prompt.messages("label", instruction=req.instruction, answer_a=a, answer_b=b)
        else:
            tb = False
            msgs = self.prompt.messages("label", instruction=req.instruction, answer=a,
                                        max_grade=int(self.spec.scale or 9))
        text, templated = chat_text(self.tokenizer, msgs)
        if not templated and not self._warned_no_template:
            logger.warning("judge tokenizer has no chat template; using plain text turns")
            self._warned_no_template = True
        ids = self.tokenizer(text + self.prefill, add_special_tokens=not templated)["input_ids"]
        return ids, ta or tb

    def _sliding_window(self) -> int | None:
        cfg = self.model.config
        types = getattr(cfg, "layer_types", None)
        if types is not None:
            return getattr(cfg, "sliding_window", None) if any("sliding" in str(t) for t in types) else None
        if getattr(cfg, "use_sliding_window", True) is False:
            return None
        return getattr(cfg, "sliding_window", None)

    def _context_limit(self) -> tuple[int | None, bool]:
        """-> (trained context length, whether exceeding it is impossible). Learned position
        tables (gpt2-style) cannot index past it; rotary models can, with degraded quality."""
        cfg = self.model.config
        rotary = any(getattr(cfg, k, None) is not None for k in ("rope_parameters", "rope_scaling", "rope_theta"))
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if getattr(cfg, name, None):
                return int(getattr(cfg, name)), not rotary
        return None, False

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """KV cache of the prefix every judge input shares (system prompt, template head): it
        is ~40% of a grading input, so computing it once saves that much of every forward."""
        key = tuple(prefix)
        if self._prefix_key != key:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            kv = getattr(out, "cache", None)
            self._prefix_key, self._prefix_kv = key, kv if kv is not None else out.past_key_values
        return self._prefix_kv

    @torch.no_grad()
    def label_logprobs(self, batch_ids: list[list[int]], prefix: list[int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (log p over the labels, normalised among them, fp32 [B, L]; probability mass the full
        vocabulary distribution puts on the label tokens [B]). With `prefix` (a token prefix of
        every row), the rows' remainders run on top of the prefix's cached keys/values."""
        n_pre = len(prefix) if prefix else 0
        window = self._sliding_window()
        if n_pre and window is not None and max(len(x) for x in batch_ids) > window:
            # Sliding-window layers count cache slots, not positions: padding between the prefix
            # and a row would shift that row's window. Left padding alone is safe.
            n_pre = 0
        rows = [ids[n_pre:] for ids in batch_ids]
        pad = int(self.tokenizer.pad_token_id)
        width = max(len(x) for x in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):  # left padding: the last position is every row's next token
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        # Positions must not count the padding, or left-padded rows would see shifted positions.
        position_ids = (n_pre + mask.cumsum(-1) - 1).clamp(min=n_pre)
        kwargs: dict[str, Any] = {"use_cache": False}
        if n_pre:
            cache = copy.deepcopy(self._prefix_cache(list(prefix or [])[:n_pre]))
            cache.batch_repeat_interleave(len(rows))
            # Padding sits between the prefix and each row's remainder; the mask hides it.
            mask = torch.cat([torch.ones((len(rows), n_pre), dtype=torch.long), mask], dim=1)
            kwargs = {self._cache_arg: cache, "use_cache": True}
        head = self.model.get_output_embeddings()
        captured: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
        try:
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=position_ids.to(self.device), logits_to_keep=1, **kwargs)
        finally:
            hook.remove()
        hidden = captured[-1][:, -1, :].float()
        weight = head.weight[self.label_ids].float()
        logits = hidden @ weight.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.label_ids].float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        full = out.logits[:, -1, :].float()
        mass = torch.exp(logits - torch.logsumexp(full, dim=-1, keepdim=True)).sum(-1).clamp(max=1.0)
        return torch.log_softmax(logits, dim=-1).cpu(), mass.cpu()

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]:
        rendered = []
        limit, hard = self._context_limit()
        for req in requests:
            ids, cut = self.render(req)
            if limit is not None and len(ids) > limit:
                if hard:  # one over-long input must not stop the run: an error, excluded and counted
                    self.calls += 1
                    yield req, empty_result(error=f"judge input of {len(ids)} tokens exceeds the judge's context "
                                                  f"of {limit}; lower max_answer_tokens", truncated=cut)
                    continue
                if not self._warned_context:
                    logger.warning("judge inputs of up to %d tokens exceed the judge's trained context of %d; "
                                   "its verdicts degrade (lower max_answer_tokens)", len(ids), limit)
                    self._warned_context = True
            rendered.append((req, ids, cut))
        if not rendered:
            return
        rendered.sort(key=lambda r: len(r[1]))  # similar lengths together: less padding
        prefix = common_prefix([ids for _req, ids, _cut in rendered]) if self.spec.options.prefix_cache else []
        bs = self.spec.options.batch_size
        for start in range(0, len(rendered), bs):
            chunk = rendered[start:start + bs]
            logp, mass = self.label_logprobs([ids for _req, ids, _cut in chunk], prefix or None)
            self.calls += len(chunk)
            probs = logp.exp()
            for row, (req, _ids, cut) in enumerate(chunk):
                p = {name: float(probs[row, j]) for j, name in enumerate(self.names)}
                if req.kind == "pair":
                    label = max(p, key=p.__getitem__)
                    yield req, empty_result(label=label, probs=p, label_mass=float(mass[row]), truncated=cut)
                else:
                    grade = sum(int(g) * pg for g, pg in p.items())
                    yield req, empty_result(grade=grade, probs=p, label_mass=float(mass[row]), truncated=cut)

    def close(self) -> None:
        pass
