"""Anthropic HH-RLHF transcripts ("\\n\\nHuman: …\\n\\nAssistant: …\\n\\nHuman: …"), split one way
for every reader: the lm-eval tasks (first turn), the fit's ground-truth pairs and DPO's pool
(dialogue + last reply), and the scorer's training data (the same, posed as one instruction).

A leaf: no imports from the package, so the task utils lm-eval loads from a file can use it too.
"""

from __future__ import annotations

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"


def normalized(transcript: str) -> str:
    """The transcript with its leading "\\n\\n" (some rows start at "Human:" or with spaces)."""
    return transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip()


def split_last_reply(transcript: str) -> tuple[str, str] | None:
    """(everything before the last "\\n\\nAssistant:", that last reply stripped); None without one."""
    head, sep, reply = transcript.rpartition(ASSISTANT)
    return (head, reply.strip()) if sep else None


def without_human_tag(dialogue: str) -> str:
    """"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c" → "a\\n\\nAssistant: b\\n\\nHuman: c"."""
    s = dialogue.strip()
    if s.startswith("Human:"):
        s = s[len("Human:"):]
    return s.strip()


def first_turn(transcript: str) -> tuple[str, str]:
    """(first human turn, first assistant reply); ("", "") when the transcript has no such turn."""
    text = normalized(transcript)
    if not text.startswith(HUMAN):
        return "", ""
    human, sep, after = text[len(HUMAN):].partition(ASSISTANT)
    if not sep:
        return "", ""
    return human.strip(), after.split(HUMAN, 1)[0].strip()
