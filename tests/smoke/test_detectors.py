"""Each degeneration detector on recorded-style samples: it flags the degenerate outputs it exists
for, and no detector flags any of the good ones (lists, tables, code, CJK, a refrain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.launch.detectors import DETECTORS, degeneration_reason, looks_degenerate

SAMPLES = json.loads((Path(__file__).parent / "data" / "detector_samples.json").read_text())
GOOD = {s["id"]: s for s in SAMPLES["good"]}
DEGENERATE = {s["id"]: s for s in SAMPLES["degenerate"]}


@pytest.mark.parametrize("sample_id", list(GOOD))
@pytest.mark.parametrize("detector", list(DETECTORS))
def test_detector_passes_good_output(detector: str, sample_id: str) -> None:
    assert DETECTORS[detector](GOOD[sample_id]["text"]) is None


@pytest.mark.parametrize("sample_id", list(DEGENERATE))
def test_named_detector_flags_degenerate_output(sample_id: str) -> None:
    sample = DEGENERATE[sample_id]
    reason = DETECTORS[sample["detector"]](sample["text"])
    assert reason, f"{sample['detector']} missed {sample_id}: {sample['note']}"


@pytest.mark.parametrize("sample_id", list(DEGENERATE))
def test_combined_detector_flags_degenerate_output(sample_id: str) -> None:
    assert looks_degenerate(DEGENERATE[sample_id]["text"])


def test_every_detector_has_a_degenerate_sample() -> None:
    assert set(DETECTORS) == {s["detector"] for s in DEGENERATE.values()}


def test_reason_names_the_loop() -> None:
    reason = degeneration_reason("The answer is 42. " + "Need implement.\n\n" * 20)
    assert reason is not None and "Need implement." in reason and "repeats 19 times" in reason


def test_loop_cut_mid_unit_by_max_tokens_is_found() -> None:
    assert looks_degenerate("Sure. " + "I will check the cache now. " * 10 + "I will ch")


def test_short_repetition_is_not_a_loop() -> None:
    assert not looks_degenerate("Wow!!!!!!")
    assert not looks_degenerate("Done.\n}\n}\n}")


def test_a_few_doubled_words_in_long_prose_are_tolerated() -> None:
    prose = " ".join(GOOD[k]["text"] for k in ("paragraph", "reasoning-trace", "numbered-steps"))
    text = prose + " I said that that was fine, and he had had enough, and it was very very late."
    assert degeneration_reason(text) is None


def test_min_chars_keeps_short_answers_out_of_the_loop_detector() -> None:
    assert degeneration_reason("ha ha ha ha", min_chars=24) is None
    assert degeneration_reason("ha ha ha ha", min_chars=4) is not None
