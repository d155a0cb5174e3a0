"""The tutorial's lessons: each opens with a policy that fails its flow tests and has a
solution that passes them, on the demo topology, as the simulator judges."""

from __future__ import annotations

import pytest

from bpfleet_core.netpol import drafting, flowtests, lessons


def run(text: str, flows: str) -> tuple[int, int]:
    draft = drafting.read(text)
    assert draft.valid, [str(item) for item in draft.diagnostics]
    tests = flowtests.parse(flows, "flows")
    assert tests.problems == ()
    result = drafting.simulate(draft, [], lessons.DEMO_TOPOLOGY, None, tests)
    return sum(item.passed for item in result.flows), sum(not item.passed for item in result.flows)


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda item: item.id)
def test_a_lesson_starts_failing_and_its_solution_passes(lesson: lessons.Lesson) -> None:
    passed, failed = run(lesson.start, lesson.flows)
    assert failed >= 1
    assert run(lesson.solution, lesson.flows) == (passed + failed, 0)


def test_the_five_classic_topics() -> None:
    assert [lesson.id for lesson in lessons.LESSONS] == [
        "cross-namespace",
        "egress-to-pod",
        "dns",
        "combining-rules",
        "empty-selectors",
    ]
