"""Predicted completion (the queue played forward over the slots) and least-slack-first admission (pure)."""

from datetime import UTC, datetime, timedelta

from mousflow_operator.queue import QueueEntry, admissible, admission_order, predicted_completions

NOW = datetime(2025, 3, 1, tzinfo=UTC)
HOUR = 3600.0


def _mous(key, deadline_hours, seconds=None, priority=50, started=None):
    return QueueEntry(key, NOW + timedelta(hours=deadline_hours), priority, "", seconds, started)


def test_completion_waits_for_the_mouss_ahead_in_the_free_slots():
    queued = [_mous("ns/a", 100, 2 * HOUR), _mous("ns/b", 101, 3 * HOUR), _mous("ns/c", 102, 1 * HOUR)]
    running = [_mous("ns/r", 50, 4 * HOUR, started=NOW - timedelta(hours=1))]
    eta = predicted_completions(queued, running, slots=2, now=NOW)
    assert eta["ns/r"] == NOW + timedelta(hours=3)       # 4 h predicted, 1 h done
    assert eta["ns/a"] == NOW + timedelta(hours=2)       # the free slot
    assert eta["ns/b"] == NOW + timedelta(hours=5)       # after a (2 h), in a's slot: 2 + 3
    assert eta["ns/c"] == NOW + timedelta(hours=4)       # in r's slot when it ends: 3 + 1


def test_more_running_than_slots_delays_the_queue_until_enough_have_ended():
    running = [_mous(f"ns/r{i}", 50, h * HOUR) for i, h in enumerate((1, 2, 3))]
    eta = predicted_completions([_mous("ns/a", 100, HOUR)], running, slots=2, now=NOW)
    assert eta["ns/a"] == NOW + timedelta(hours=3)       # starts when the second of three ends


def test_a_mous_without_history_has_no_eta_and_counts_as_the_median_ahead_of_others():
    queued = [_mous("ns/unknown", 10), _mous("ns/a", 20, 2 * HOUR), _mous("ns/b", 30, 4 * HOUR)]
    eta = predicted_completions(queued, [], slots=1, now=NOW)
    assert eta["ns/unknown"] is None
    assert eta["ns/a"] == NOW + timedelta(hours=3 + 2)   # the unknown one assumed median(2, 4) = 3 h
    assert eta["ns/b"] == NOW + timedelta(hours=3 + 2 + 4)


def test_without_predictions_admission_is_earliest_deadline_first():
    queued = [_mous("ns/late", 30), _mous("ns/early", 10), _mous("ns/mid", 20)]
    assert [e.key for e in admission_order(queued, [], 1, NOW)] == ["ns/early", "ns/mid", "ns/late"]
    assert admissible(queued, processing=0, limit=1, now=NOW) == ["ns/early"]


def test_a_large_mous_that_would_miss_its_deadline_goes_before_small_ones_with_slack():
    # one slot; two small MOUSs (1 h) due in 10 and 11 h, a large one (20 h) due in 21 h: in deadline order
    # the large one would end at 1 + 1 + 20 = 22 h, late
    small1, small2 = _mous("ns/small1", 10, HOUR), _mous("ns/small2", 11, HOUR)
    large = _mous("ns/large", 21, 20 * HOUR)
    order = [e.key for e in admission_order([small1, small2, large], [], 1, NOW)]
    assert order == ["ns/large", "ns/small1", "ns/small2"]
    eta = predicted_completions([small1, small2, large], [], 1, NOW)
    assert eta["ns/large"] <= large.deadline                       # now on time ...
    assert eta["ns/small1"] == NOW + timedelta(hours=21) > small1.deadline  # ... at the small ones' expense
    assert admissible([small1, small2, large], processing=0, limit=1, now=NOW) == ["ns/large"]


def test_among_mouss_at_risk_the_least_slack_goes_first_and_equal_slack_falls_back_to_the_deadline():
    # one slot taken for 10 more hours: every MOUS is at risk; slack = deadline - now - own time
    running = [_mous("ns/running", 50, 10 * HOUR)]
    a = _mous("ns/a", 5, 2 * HOUR)      # slack 3 h
    b = _mous("ns/b", 6, 6 * HOUR)      # slack 0 h
    c = _mous("ns/c", 7, 4 * HOUR)      # slack 3 h, later deadline than a
    assert [e.key for e in admission_order([c, a, b], running, 1, NOW)] == ["ns/b", "ns/a", "ns/c"]


def test_mouss_with_time_to_spare_keep_deadline_order_behind_those_at_risk():
    spare1, spare2 = _mous("ns/spare1", 100, HOUR), _mous("ns/spare2", 200, HOUR)
    risky = _mous("ns/risky", 300, 299 * HOUR, priority=0)
    assert [e.key for e in admission_order([spare2, risky, spare1], [], 1, NOW)] == \
        ["ns/risky", "ns/spare1", "ns/spare2"]
    # two slots: nobody is at risk, deadline order stands
    assert [e.key for e in admission_order([spare2, risky, spare1], [], 2, NOW)] == \
        ["ns/spare1", "ns/spare2", "ns/risky"]


def test_a_stored_eta_moves_only_when_the_prediction_moved_by_a_tenth_of_the_time_left():
    from mousflow_operator.queue import settled_eta

    stored = NOW + timedelta(hours=10)
    assert settled_eta(stored, NOW + timedelta(hours=10, minutes=50), NOW) == stored  # 50 min of 10 h: kept
    assert settled_eta(stored, NOW + timedelta(hours=11, minutes=30), NOW) == NOW + timedelta(hours=11, minutes=30)
    near = NOW + timedelta(minutes=20)
    assert settled_eta(near, near + timedelta(minutes=9), NOW) == near  # the 10-minute floor
    assert settled_eta(near, near + timedelta(minutes=11), NOW) == near + timedelta(minutes=11)
    assert settled_eta(None, near, NOW) == near and settled_eta(near, None, NOW) is None
