"""One reading of HH-RLHF transcripts (alignez_eval/hh_rlhf.py) behind the tasks, the fit's pairs, DPO's
pool and the scorer's training data."""

from __future__ import annotations

from alignez_eval.fitting.prefdata import parse_row, split_hh
from alignez_eval.hh_rlhf import first_turn, split_last_reply, without_human_tag
from alignez_eval.scorer.data import hh_pair, hh_split
from alignez_eval.tasks.utils import hh_first_turn

MULTI = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:  d "


def test_the_primitives() -> None:
    assert split_last_reply(MULTI) == ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "d")
    assert split_last_reply("no turn") is None
    assert without_human_tag("\n\nHuman: a\n\nAssistant: b") == "a\n\nAssistant: b"
    assert first_turn(MULTI) == ("a", "b") and first_turn("Human: q\n\nAssistant: r") == ("q", "r")
    assert first_turn("Assistant: r") == ("", "") and first_turn("\n\nHuman: q") == ("", "")


def test_every_reader_takes_the_same_turns() -> None:
    assert hh_first_turn is first_turn  # the tasks
    assert split_hh(MULTI) == split_last_reply(MULTI)  # the fit
    rejected = MULTI.replace(" d ", " e")
    # the fit and DPO keep the dialogue without its first tag; the scorer keeps the tags of a multi-turn dialogue
    assert parse_row({"chosen": MULTI, "rejected": rejected})[1:] == ("a\n\nAssistant: b\n\nHuman: c", "d", "e")
    assert hh_pair({"chosen": MULTI, "rejected": rejected}) == ("Human: a\n\nAssistant: b\n\nHuman: c", "e", "d")
    assert hh_split("Human: q\n\nAssistant: r") == ("q", "r")  # one turn: the question itself
