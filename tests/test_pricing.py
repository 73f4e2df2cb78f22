"""Prices as data, estimates before anything is created: documented numbers only, "unknown" otherwise."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.limits import PROVIDERS
from pipeline.pricing import PlannedJob, budget_refusal, estimate, load_price

FAL = load_price("fal")
JOBS = st.lists(
    st.builds(
        PlannedJob,
        index=st.integers(0, 99),
        seconds=st.floats(0.04, 30.0),
        tts_characters=st.one_of(st.just(0), st.integers(1, 200)),
    ),
    max_size=40,
)


def test_fal_documents_its_price_and_the_others_none():
    assert (FAL.currency, FAL.per_output_second, FAL.per_100_tts_characters) == (
        "USD",
        Decimal("0.04"),
        Decimal("0.24"),
    )
    for provider in set(PROVIDERS) - {"fal"}:
        price = load_price(provider)
        assert price.per_output_second is None and price.per_100_tts_characters is None
        assert "no price per job documented" in price.source


def test_thirty_seconds_with_audio_and_with_a_script_on_fal():
    est = estimate("fal", FAL, [PlannedJob(0, 30.0), PlannedJob(1, 12.5, tts_characters=150)])
    assert [line.amount for line in est.lines] == [Decimal("1.20"), Decimal("0.52") + Decimal("0.48")]
    assert est.total == Decimal("2.20") and est.text() == "USD 2.20"
    assert est.to_dict()["total"] == "2.20" and est.to_dict()["calls"] == 2


@pytest.mark.parametrize("provider", ["pixverse", "aimlapi", "useapi"])
def test_undocumented_prices_are_unknown_never_invented(provider):
    est = estimate(provider, load_price(provider), [PlannedJob(0, 10.0)])
    assert est.total is None and not est.known and est.text() == "unknown"
    assert est.to_dict()["lines"][0]["amount"] == "unknown"
    assert any("unknown" in r for r in est.reasons)
    refusal = budget_refusal(est, Decimal("5"))
    assert refusal and f"[prices.{provider}]" in refusal


def test_a_config_may_set_a_price_and_says_so():
    price = load_price("pixverse", {"currency": "USD", "per_output_second": 0.05})
    assert price.per_output_second == Decimal("0.05")
    assert "config" in price.source
    assert estimate("pixverse", price, [PlannedJob(0, 10.0)]).total == Decimal("0.50")
    # a script with no per-character price stays unknown
    assert estimate("pixverse", price, [PlannedJob(0, 10.0, tts_characters=20)]).total is None


def test_bad_prices_are_config_errors():
    with pytest.raises(ConfigError, match=r"prices.fal.per_output_second"):
        load_price("fal", {"per_output_second": -1})
    with pytest.raises(ConfigError, match=r"prices.fal.per_second"):
        load_price("fal", {"per_second": 1})
    with pytest.raises(ConfigError, match="unknown provider"):
        load_price("sync.so")


def test_budget_refuses_over_and_allows_at_or_under():
    est = estimate("fal", FAL, [PlannedJob(0, 30.0)] * 3)  # 3.60
    assert budget_refusal(est, Decimal("3.60")) is None
    refusal = budget_refusal(est, Decimal("3.59"))
    assert refusal and "USD 3.60" in refusal and "3.59" in refusal


@settings(max_examples=300, deadline=None)
@given(JOBS)
def test_fal_estimate_is_the_sum_of_its_lines_and_never_under_the_documented_rate(jobs):
    est = estimate("fal", FAL, jobs)
    assert est.known and len(est.lines) == len(jobs)
    assert est.total == sum((line.amount for line in est.lines), Decimal(0))
    for job, line in zip(jobs, est.lines, strict=True):
        exact = Decimal(job.seconds) * Decimal("0.04") + Decimal(job.tts_characters) * Decimal("0.0024")
        unit = Decimal("0.04") + (Decimal("0.24") if job.tts_characters else 0)
        assert exact <= line.amount < exact + unit  # rounded up, by less than one unit of each
        assert line.amount == Decimal("0.04") * math.ceil(job.seconds) + Decimal("0.24") * math.ceil(
            job.tts_characters / 100
        )


@settings(max_examples=200, deadline=None)
@given(JOBS.filter(bool), st.integers(0, 39), st.floats(0.0, 5.0))
def test_a_longer_job_never_costs_less(jobs, which, extra):
    which %= len(jobs)
    longer = [
        *jobs[:which],
        PlannedJob(jobs[which].index, jobs[which].seconds + extra, jobs[which].tts_characters),
        *jobs[which + 1 :],
    ]
    assert estimate("fal", FAL, longer).total >= estimate("fal", FAL, jobs).total


@settings(max_examples=200, deadline=None)
@given(JOBS)
def test_one_unknown_line_makes_the_total_unknown(jobs):
    seconds_only = load_price("pixverse", {"currency": "USD", "per_output_second": 0.05})
    est = estimate("pixverse", seconds_only, jobs)
    assert [line.amount is None for line in est.lines] == [bool(job.tts_characters) for job in jobs]
    assert (est.total is None) == any(job.tts_characters for job in jobs)
