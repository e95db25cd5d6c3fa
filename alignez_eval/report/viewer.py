"""answers.html: every judged answer of a report side by side, in one self-contained file.

Per prompt: the instruction, the baseline's answer and each system's answer with its verdict against
the baseline, the judge's score and word counts. Filters (prompt set, system, verdict, length change)
and a search box narrow it down; the state lives in the URL's #fragment, so a filtered view can be
linked. No server, no network: the data is embedded as JSON, the script and style are inline, and a
Content-Security-Policy of `default-src 'none'` stops the browser from fetching anything at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_text
from alignez_eval.judge.runner import load_judgments
from alignez_eval.shareable import shareable

# a length change smaller than this share of the baseline's words counts as "same length"
SAME_LENGTH = 0.1


def length_change(base_words: int, words: int) -> str:
    if abs(words - base_words) <= SAME_LENGTH * max(base_words, 1):
        return "same"
    return "longer" if words > base_words else "shorter"


def viewer_data(judgments_dirs: list[str | Path], title: str) -> dict[str, Any]:
    """The prompts of every judged comparison, grouped per (baseline, prompt set, doc)."""
    prompts: dict[tuple[str, str, str], dict[str, Any]] = {}
    systems: list[str] = []
    for jdir in judgments_dirs:
        manifest, records = load_judgments(jdir)
        base = manifest["baseline"]["name"]
        for cand, recs in records.items():
            if cand not in systems:
                systems.append(cand)
            for r in recs:
                key = (base, str(r["family"]), str(r["doc_id"]))
                p = prompts.setdefault(key, {"set": r["family"], "id": str(r["doc_id"]), "instruction": r["instruction"],
                                             "baseline": {"name": base, "answer": r["baseline"],
                                                          "words": r["len_baseline"]}, "systems": []})
                p["systems"].append({"name": cand, "answer": r["candidate"], "words": r["len_candidate"],
                                     "verdict": r["verdict"], "score": r.get("score"),
                                     "length": length_change(int(r["len_baseline"]), int(r["len_candidate"]))})
    ordered = [prompts[k] for k in sorted(prompts, key=lambda k: (k[0], k[1], _doc_order(k[2])))]
    return shareable({"title": title, "systems": systems, "sets": sorted({p["set"] for p in ordered}),
                      "prompts": ordered})


def _doc_order(doc: str) -> tuple[int, str]:
    return (int(doc), "") if doc.lstrip("-").isdigit() else (0, doc)


def write_viewer(judgments_dirs: list[str | Path], path: str | Path, title: str) -> Path:
    data = viewer_data(judgments_dirs, title)
    # "</" would end the <script> element early; \u003c is the same character to JSON.parse
    blob = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    html = PAGE.replace("__TITLE__", _escape(title)).replace("__DATA__", blob)
    atomic_write_text(path, html)
    return Path(path)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>answers: __TITLE__</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #f6f6f8; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: 10px 16px; z-index: 1; }
h1 { font-size: 17px; margin: 0 0 8px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; }
.controls label { font-size: 12px; color: #555; }
select, input { font: inherit; padding: 2px 4px; }
#count { font-weight: 600; margin-left: auto; }
main { padding: 12px 16px; }
article { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 0 0 14px; padding: 10px 12px; }
.meta { font-size: 12px; color: #666; }
.instruction { font-weight: 600; margin: 4px 0 8px; white-space: pre-wrap; }
.answers { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 8px; }
.card { border: 1px solid #e2e2e2; border-radius: 5px; padding: 6px 8px; }
.card.baseline { background: #f3f6fb; }
.card h3 { font-size: 13px; margin: 0 0 4px; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.card pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 13px/1.4 ui-monospace, monospace; }
.badge { font-size: 11px; border-radius: 3px; padding: 0 5px; color: #fff; }
.win { background: #2e7d32; } .lose { background: #c62828; } .tie { background: #757575; } .error { background: #6a1b9a; }
.hidden { display: none; }
</style>
</head>
<body>
<header>
<h1>answers: __TITLE__</h1>
<div class="controls">
<label>prompt set <select id="f-set"></select></label>
<label>system <select id="f-system"></select></label>
<label>verdict vs baseline <select id="f-verdict">
<option value="">any</option><option value="win">win</option><option value="tie">tie</option>
<option value="lose">lose</option><option value="error">error</option></select></label>
<label>length vs baseline <select id="f-length">
<option value="">any</option><option value="longer">longer</option><option value="same">same (±10%)</option>
<option value="shorter">shorter</option></select></label>
<label>search <input id="f-search" type="search" placeholder="words in the prompt or an answer"></label>
<span id="count"></span>
</div>
</header>
<main id="prompts"></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const FILTERS = { set: $("f-set"), system: $("f-system"), verdict: $("f-verdict"), length: $("f-length"), q: $("f-search") };

function option(select, value, text) {
  const o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
}
option(FILTERS.set, "", "all"); DATA.sets.forEach((s) => option(FILTERS.set, s, s));
option(FILTERS.system, "", "all"); DATA.systems.forEach((s) => option(FILTERS.system, s, s));

function el(tag, cls, text) {
  const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e;
}
function card(name, answer, words, extra) {
  const c = el("div", "card"); const h = el("h3"); h.appendChild(el("span", "", name));
  if (extra) extra(h);
  h.appendChild(el("span", "meta", words + " words")); c.appendChild(h); c.appendChild(el("pre", "", answer)); return c;
}
const rows = DATA.prompts.map((p) => {
  const a = el("article", "prompt"); a.dataset.set = p.set;
  a.appendChild(el("div", "meta", p.set + " · doc " + p.id));
  a.appendChild(el("div", "instruction", p.instruction));
  const grid = el("div", "answers");
  const base = card(p.baseline.name + " (baseline)", p.baseline.answer, p.baseline.words); base.classList.add("baseline");
  grid.appendChild(base);
  const cards = p.systems.map((s) => {
    const c = card(s.name, s.answer, s.words, (h) => {
      h.appendChild(el("span", "badge " + s.verdict, s.verdict));
      if (s.score !== null && s.score !== undefined) h.appendChild(el("span", "meta", "score " + Number(s.score).toFixed(2)));
      const d = s.words - p.baseline.words; h.appendChild(el("span", "meta", (d >= 0 ? "+" : "") + d + " words"));
    });
    c.classList.add("system"); c.dataset.system = s.name; c.dataset.verdict = s.verdict; c.dataset.length = s.length;
    grid.appendChild(c); return { el: c, s: s };
  });
  a.appendChild(grid); $("prompts").appendChild(a);
  const text = [p.instruction, p.baseline.answer, ...p.systems.map((s) => s.answer)].join("\\n").toLowerCase();
  return { el: a, p: p, cards: cards, text: text };
});

function apply() {
  const f = Object.fromEntries(Object.entries(FILTERS).map(([k, e]) => [k, e.value.trim()]));
  const q = f.q.toLowerCase(); let shown = 0;
  for (const r of rows) {
    let any = false;
    for (const c of r.cards) {
      const ok = (!f.system || c.s.name === f.system) && (!f.verdict || c.s.verdict === f.verdict) &&
                 (!f.length || c.s.length === f.length);
      c.el.classList.toggle("hidden", !ok); any = any || ok;
    }
    const visible = any && (!f.set || r.p.set === f.set) && (!q || r.text.includes(q));
    r.el.classList.toggle("hidden", !visible); if (visible) shown += 1;
  }
  $("count").textContent = shown + " of " + rows.length + " prompts";
  const state = new URLSearchParams(Object.entries(f).filter(([, v]) => v)).toString();
  history.replaceState(null, "", state ? "#" + state : location.pathname);
}
const initial = new URLSearchParams(location.hash.slice(1));
for (const [k, e] of Object.entries(FILTERS)) { if (initial.get(k)) e.value = initial.get(k); e.addEventListener("input", apply); e.addEventListener("change", apply); }
apply();
</script>
</body>
</html>
"""
