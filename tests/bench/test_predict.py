"""serve.bench.predict: MTP tok/s at a per-position acceptance, interpolated between the measured 0% and
100% brackets. Pure arithmetic plus the CLI's labelled output and its bad-input lines; under a second."""

from __future__ import annotations

import pytest

from serve.bench import predict as pr
from serve.errors import KitError

# The H200 figures of issue 14 as sample brackets (no-spec 8.74 ms, MTP 1 with nothing accepted 11.01 ms)
NOSPEC, REJECT = 8.74e-3, 11.01e-3


def test_brackets_are_reproduced_exactly() -> None:
    zero = pr.predict(
        tpot_nospec_s=NOSPEC, tpot_reject_s=REJECT, tpot_accept_s=4e-3, num_speculative_tokens=3,
        acceptance=(0, 0, 0),
    )  # fmt: skip
    assert zero.tokens_per_step == 1.0 and zero.tpot_s == pytest.approx(REJECT)
    full = pr.predict(
        tpot_nospec_s=NOSPEC, tpot_reject_s=REJECT, tpot_accept_s=4e-3, num_speculative_tokens=3,
        acceptance=(1, 1, 1),
    )  # fmt: skip
    assert full.tokens_per_step == 4.0 and full.tpot_s == pytest.approx(4e-3)
    assert full.step_s == pytest.approx(16e-3) and full.speedup == pytest.approx(NOSPEC / 4e-3)


def test_users_rates_marginal_and_conditional() -> None:
    # marginal (vLLM's per-position figures): 1 + 0.85 + 0.63 + 0.44 = 2.92 tokens per step
    assert pr.expected_accepted(pr.USERS_ACCEPTANCE) == pytest.approx(1.92)
    # conditional: 0.85 + 0.85*0.63 + 0.85*0.63*0.44 = 0.85 + 0.5355 + 0.23562 = 1.62112
    assert pr.expected_accepted(pr.USERS_ACCEPTANCE, "conditional") == pytest.approx(1.62112)
    p = pr.predict(tpot_nospec_s=NOSPEC, tpot_reject_s=REJECT, tpot_accept_s=4e-3, num_speculative_tokens=3)
    # step = 11.01 + (16 - 11.01) * 1.92 / 3 = 14.2036 ms over 2.92 tokens
    assert p.step_s == pytest.approx(14.2036e-3) and p.tpot_s == pytest.approx(14.2036e-3 / 2.92)
    assert p.tok_s == pytest.approx(2.92 / 14.2036e-3) and p.kind == "marginal"


def test_linear_in_accepted_length_and_scaled_by_concurrency() -> None:
    steps = [
        pr.predict(
            tpot_nospec_s=NOSPEC, tpot_reject_s=REJECT, tpot_accept_s=5e-3, num_speculative_tokens=2,
            acceptance=(a, a),
        ).step_s
        for a in (0.0, 0.25, 0.5, 1.0)
    ]  # fmt: skip
    assert steps[1] - steps[0] == pytest.approx((steps[3] - steps[0]) / 4)
    assert steps[2] - steps[0] == pytest.approx((steps[3] - steps[0]) / 2)
    one = pr.predict(tpot_nospec_s=NOSPEC, tpot_reject_s=REJECT, tpot_accept_s=5e-3, num_speculative_tokens=3)
    four = pr.predict(
        tpot_nospec_s=NOSPEC,
        tpot_reject_s=REJECT,
        tpot_accept_s=5e-3,
        num_speculative_tokens=3,
        concurrency=4,
    )
    assert four.tok_s == pytest.approx(4 * one.tok_s) and four.tpot_s == one.tpot_s


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"acceptance": (0.8, 0.9, 0.1)}, "increase"),
        ({"acceptance": (0.8, 0.5)}, "2 acceptance rates for MTP 3"),
        ({"acceptance": (1.2, 0.5, 0.1)}, "in 0..1"),
        ({"tpot_accept_s": 0.0}, "100% TPOT must be a positive"),
        ({"num_speculative_tokens": 0, "acceptance": ()}, "1 or more"),
        ({"kind": "joint"}, "not one of marginal, conditional"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message) -> None:
    args = {
        "tpot_nospec_s": NOSPEC, "tpot_reject_s": REJECT, "tpot_accept_s": 4e-3, "num_speculative_tokens": 3,
        **kwargs,
    }  # fmt: skip
    with pytest.raises(KitError, match=message):
        pr.predict(**args)


def test_cli_prints_a_labelled_prediction(capsys) -> None:
    from serve.cli import main

    argv = [
        "bench",
        "--predict",
        "--tpot-nospec-ms",
        "8.74",
        "--tpot-reject-ms",
        "11.01",
        "--tpot-accept-ms",
        "4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "PREDICTION (not a measurement): MTP 3 at marginal per-position acceptance 0.85 / 0.63"
    )
    assert "assumes: step cost linear in accepted drafts" in out
    assert "2.92 tokens per step, step 14.20 ms, TPOT 4.86 ms, 205.6 tok/s per stream" in out
    assert main([*argv, "--acceptance", "0.5,0.5,0.5", "--acceptance-kind", "conditional", "--mtp", "3"]) == 0
    assert "1.88 tokens per step" in capsys.readouterr().out  # 1 + .5 + .25 + .125


def test_cli_names_what_is_missing(capsys) -> None:
    from serve.cli import main

    assert main(["bench", "--predict", "--tpot-nospec-ms", "8.74"]) == 2
    err = capsys.readouterr().err
    assert "--tpot-reject-ms, --tpot-accept-ms" in err and "Traceback" not in err
