"""What an agent's report carries of its counters: what changed since the API took the
last report, the largest changes first, never more than a report may hold; the rest in
the next reports; and when a report goes at all."""

from __future__ import annotations

from bpfleet_agent.enforcing import CounterKey, counters_to_report
from bpfleet_agent.fleetlink import report_due
from bpfleet_agent.settings import AgentSettings
from bpfleet_core.protocol import MAX_REPORTED_POLICIES, MAX_REPORTED_RULES, PolicyReport


def test_only_changes_travel_the_largest_first_within_bounds() -> None:
    # 2,000 rules of one policy counted flows; 300 other policies denied packets.
    current: dict[CounterKey, int] = {("ns/big", "ingress", i): i + 1 for i in range(2000)}
    current[("ns/big", "denied", 0)] = 7
    for p in range(300):
        current[(f"ns/p{p}", "denied", 0)] = 1
    reported: dict[CounterKey, int] = {}
    sent_rules: list[int] = []
    for _ in range(10):  # report after report, each taken by the API
        counters, values = counters_to_report(current, reported)
        report = PolicyReport.model_validate(
            {
                "state": "Enforcing",
                "countersSince": 1,
                "counters": counters,
                "updatedAt": "2026-01-01T00:00:00Z",
            }
        )  # within the protocol's bounds, or this would raise
        assert sum(len(c.rules) for c in report.counters) <= MAX_REPORTED_RULES
        assert len(report.counters) <= MAX_REPORTED_POLICIES
        big = next((c for c in report.counters if c.policy == "ns/big"), None)
        if big is not None:
            flows = [rule.flows for rule in big.rules]
            assert flows == sorted(flows, reverse=True), "the largest changes first"
            assert big.denied == 7
            sent_rules += [rule.index for rule in big.rules]
        reported.update(values)
    assert sorted(sent_rules) == list(range(2000)), "every rule, once"
    assert {key for key, value in current.items() if reported.get(key) != value} == set()
    # Nothing changed since: nothing to send.
    assert counters_to_report(current, reported) == ([], {})
    # One rule counts on: it alone travels, with its policy's totals.
    current[("ns/big", "ingress", 5)] += 3
    counters, _ = counters_to_report(current, reported)
    assert [(c.policy, [(r.index, r.flows) for r in c.rules], c.denied) for c in counters] == [
        ("ns/big", [(5, 9)], 7)
    ]


def test_moved_counters_are_sent_every_30_s_an_unchanged_report_every_300_s() -> None:
    settings = AgentSettings(counters_refresh_interval=30, status_refresh_interval=300)
    sent = ("report", "counters", 1000.0)
    assert report_due(None, ("report", "counters", 1000.0), settings)
    assert report_due(sent, ("another report", "counters", 1001.0), settings)  # at once
    assert not report_due(sent, ("report", "counters", 1299.0), settings)
    assert report_due(sent, ("report", "counters", 1300.0), settings)
    assert not report_due(sent, ("report", "moved", 1029.0), settings)
    assert report_due(sent, ("report", "moved", 1030.0), settings)
