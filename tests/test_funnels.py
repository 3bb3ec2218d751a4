"""Step names of funnel() from the NRQL (archiver/queries/funnels.py)."""

import pytest

from archiver.queries.funnels import funnel_steps


@pytest.mark.parametrize(
    ("nrql", "expected"),
    [
        pytest.param(
            "SELECT funnel(session, where requestUrl like '%/checkout' as 'Enter Checkout', "
            "where requestUrl like '%/pay%' as 'Payment', where a >= 200 and b < 300 as 'Orders')"
            " FROM AjaxRequest",
            {"funnel.session": ("Enter Checkout", "Payment", "Orders")},
            id="named-steps",
        ),
        pytest.param(
            "SELECT funnel(session, WHERE page = 'a', WHERE page IN ('b', 'c')) FROM PageView",
            {"funnel.session": ("step1", "step2")},
            id="unnamed-steps",
        ),
        pytest.param(
            "SELECT funnel(userId, WHERE x = 'it''s, (odd)' AS 'A', WHERE y = 1) AS 'signup'"
            " FROM T",
            {"signup": ("A", "step2")},
            id="alias-quotes-commas",
        ),
        pytest.param("SELECT count(*) FROM T", {}, id="no-funnel"),
        pytest.param("SELECT funnel(session FROM T", {}, id="unclosed"),
        pytest.param(
            "SELECT count(*) FROM T WHERE name = 'funnel(x, y)' -- funnel(a, b)", {}, id="quoted"
        ),
        pytest.param(
            "SELECT funnel(session, WHERE a = 1 /* first, step */ AS 'A', WHERE b = 2) FROM T",
            {"funnel.session": ("A", "step2")},
            id="comment-with-comma",
        ),
    ],
)
def test_funnel_steps(nrql, expected):
    assert funnel_steps(nrql) == expected
