"""TokenBucket, AimdRate and SitePause with a fake clock (no sleeps)."""

from __future__ import annotations

import pytest

from relay.delivery.throttle import AimdRate, SitePause, TokenBucket
from relay.rules.types import PauseReason, Signal

DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# region TokenBucket
def test_bucket_burst_then_spacing() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [b.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.try_take() == pytest.approx(0.5)  # nothing taken
    assert b.try_take() == pytest.approx(0.5)
    clock.advance(0.25)
    assert b.try_take() == pytest.approx(0.25)
    clock.advance(0.25)
    assert b.try_take() == 0.0
    assert b.try_take() == pytest.approx(0.5)


def test_bucket_never_holds_more_than_burst() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=10.0, burst=2, clock=clock)
    clock.advance(3600)
    assert b.tokens == 2
    assert [b.try_take() for _ in range(3)][:2] == [0.0, 0.0]


def test_bucket_set_rate_keeps_earned_tokens() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert b.try_take() == 0.0
    clock.advance(0.5)  # half a token earned at 1/s
    b.set_rate(0.1)
    assert b.rate == 0.1
    assert b.try_take() == pytest.approx(5.0)  # the missing half at 0.1/s
    b.set_rate(4.0, burst=4)
    assert b.burst == 4
    assert b.try_take() == pytest.approx(0.125)


def test_bucket_clock_stepping_back_is_harmless() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=1.0, burst=1, clock=clock)
    b.try_take()
    clock.advance(-100)
    assert b.try_take() == pytest.approx(1.0)
    clock.advance(1.0)
    assert b.try_take() == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0.5)])
def test_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, FakeClock())


# endregion


# region AimdRate
def _aimd(clock: FakeClock | None = None, **kw: float) -> AimdRate:  # start floor ceiling add mult
    args: dict[str, float] = {"start": 10.0, "floor": 0.5, "ceiling": 100.0, "add": 1.0, "mult": 0.5}
    args.update(kw)
    return AimdRate(**args, max_connections=8, initial_connections=5, clock=clock)  # type: ignore[arg-type]


def test_additive_increase_is_about_add_per_second_of_sending() -> None:
    a = _aimd()
    for _ in range(10):  # one second of sending at 10/s
        a.on_accept()
    assert 10.9 < a.rate < 11.0
    for _ in range(200):  # r*r grows by about 2*add per accept: sqrt(121 + 400)
        a.on_accept()
    assert 22.5 < a.rate < 23.0


def test_increase_below_one_per_second_at_most_doubles() -> None:
    a = _aimd(start=0.5)
    a.on_accept()
    assert a.rate == pytest.approx(1.0)
    a.on_accept()
    assert a.rate == pytest.approx(2.0)
    a.on_accept()
    assert a.rate == pytest.approx(2.5)  # now linear: + add / rate


def test_increase_stops_at_ceiling() -> None:
    a = _aimd(start=99.9)
    for _ in range(100):
        a.on_accept()
    assert a.rate == 100.0


def test_multiplicative_decrease_and_floor() -> None:
    a = _aimd()
    a.on_signal(Signal.RATE_LIMIT)
    assert a.rate == 5.0
    for _ in range(10):
        a.on_signal(Signal.RATE_LIMIT)
    assert a.rate == 0.5  # never below the floor


def test_reputation_and_none_change_nothing() -> None:
    a = _aimd()
    a.on_signal(Signal.REPUTATION)
    a.on_signal(Signal.NONE)
    assert a.rate == 10.0 and a.connections == 5


def test_conn_limit_halves_rate_and_connections_down_to_one() -> None:
    a = _aimd()
    assert a.connections == 5
    a.on_signal(Signal.CONN_LIMIT)
    assert (a.rate, a.connections) == (5.0, 2)
    a.on_signal(Signal.CONN_LIMIT)
    assert a.connections == 1
    a.on_signal(Signal.CONN_LIMIT)
    assert a.connections == 1
    a.on_signal(Signal.RATE_LIMIT)
    assert a.connections == 1  # a rate limit leaves the window alone


def test_connection_window_slow_start_up_to_max() -> None:
    a = AimdRate(start=1, floor=1, ceiling=1000, max_connections=4)
    assert a.connections == 1  # a new site starts with one connection
    a.on_accept()
    assert a.connections == 2  # window 1 -> 2 after one delivery
    a.on_accept()
    a.on_accept()
    assert a.connections == 2  # 2.5, 2.9: +1/window per delivery
    a.on_accept()
    assert a.connections == 3
    for _ in range(100):
        a.on_accept()
    assert a.connections == 4


def test_decrease_once_per_hold_with_a_clock() -> None:
    clock = FakeClock()
    a = _aimd(clock)
    for _ in range(10):  # ten in-flight messages get the same 421
        a.on_signal(Signal.CONN_LIMIT)
    assert (a.rate, a.connections) == (5.0, 2)
    clock.advance(1.9)
    a.on_signal(Signal.RATE_LIMIT)
    assert a.rate == 5.0
    clock.advance(0.1)
    a.on_signal(Signal.RATE_LIMIT)
    assert a.rate == 2.5
    a.on_signal(Signal.CONN_LIMIT)  # rate hold running; the connection hold expired too
    assert (a.rate, a.connections) == (2.5, 1)


def test_operator_ceiling_caps_and_can_change_while_running() -> None:
    a = _aimd(start=50.0)
    a.set_ceiling(20.0)
    assert a.rate == 20.0
    a.set_ceiling(80.0)
    assert a.rate == 50.0  # our own rate again (no push-back happened)
    a.set_ceiling(None)
    assert a.rate == 50.0
    a.set_ceiling(0)  # <= 0 means "no operator cap"
    assert a.rate == 50.0 and a.operator_max is None


def test_operator_cap_below_floor_wins() -> None:
    a = _aimd()
    a.set_ceiling(0.1)
    assert a.rate == 0.1


def test_decrease_under_operator_cap_cuts_from_what_is_sent() -> None:
    a = _aimd(start=100.0)
    a.set_ceiling(10.0)
    a.on_signal(Signal.RATE_LIMIT)
    assert a.rate == 5.0
    a.set_ceiling(None)
    assert a.rate == 5.0  # the push-back is remembered when the cap goes away
    for _ in range(5):
        a.on_accept()
    assert 5.9 < a.rate < 6.0


def test_increase_under_operator_cap_stops_at_the_cap() -> None:
    a = _aimd(start=5.0)
    a.set_ceiling(6.0)
    for _ in range(100):
        a.on_accept()
    a.set_ceiling(None)
    assert a.rate == 6.0


def test_reset_rate_is_clamped() -> None:
    a = _aimd()
    a.reset_rate(1e9)
    assert a.rate == 100.0
    a.reset_rate(0.0)
    assert a.rate == 0.5


def test_start_is_clamped() -> None:
    assert _aimd(start=1000.0).rate == 100.0
    assert _aimd(start=0.0).rate == 0.5


@pytest.mark.parametrize(
    "kw",
    [{"floor": 0.0}, {"floor": 10.0, "ceiling": 5.0}, {"mult": 1.0}, {"mult": 0.0}, {"add": -1.0}],
)
def test_aimd_rejects_bad_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _aimd(None, **kw)
    with pytest.raises(ValueError):
        AimdRate(1, 1, 1, max_connections=0)


# endregion


# region SitePause
def test_pause_backoff_doubles_per_consecutive_pause() -> None:
    p = SitePause(initial=60, maximum=3 * DAY)
    now = 0.0
    ends = []
    for _ in range(5):
        end = p.pause(PauseReason.DOMAIN_LIMIT, "421 4.7.0 try later", now)
        ends.append(end - now)
        assert p.is_paused(now) and p.is_paused(end - 0.001) and not p.is_paused(end)
        now = end
    assert ends == [60, 120, 240, 480, 960]
    assert p.consecutive == 5


def test_pause_while_paused_does_not_escalate() -> None:
    p = SitePause(initial=60)
    end = p.pause(PauseReason.IP_REPUTATION, "550 5.7.1 blocked using spamhaus", 0.0)
    assert p.pause(PauseReason.DOMAIN_LIMIT, "421 busy", 30.0) == end
    assert p.reason is PauseReason.IP_REPUTATION and p.reply == "550 5.7.1 blocked using spamhaus"
    assert p.consecutive == 1


def test_pause_capped_at_maximum_and_long_flag() -> None:
    p = SitePause(initial=60, maximum=3 * DAY, long_after=2 * DAY)
    now = 0.0
    longs = []
    for _ in range(15):
        end = p.pause(PauseReason.IP_REPUTATION, "554 blocked", now)
        st = p.state(now)
        assert st is not None and st.next_send_at == end and st.since == now
        longs.append(st.long)
        now = end
    # 60 * 2**11 = 1.42 days (short); 60 * 2**12 = 2.84 days (long); then capped at 3 days
    assert longs == [False] * 12 + [True] * 3
    assert p.delay_for(12) == 60 * 2**12 and p.delay_for(13) == 3 * DAY and p.delay_for(10**6) == 3 * DAY
    assert end - (now - (end - now)) <= 3 * DAY


def test_delivery_resets_the_streak() -> None:
    p = SitePause(initial=60)
    end = p.pause(PauseReason.DOMAIN_LIMIT, "r", 0.0)
    end = p.pause(PauseReason.DOMAIN_LIMIT, "r", end)
    p.on_accept()
    assert p.pause(PauseReason.DOMAIN_LIMIT, "r", end) == end + 60


def test_recover_resumes_now_and_resets_backoff() -> None:
    p = SitePause(initial=60)
    now = 0.0
    for _ in range(4):
        now = p.pause(PauseReason.CONNECTION_FREQUENCY, "421 HL:ICC", now)
    p.pause(PauseReason.CONNECTION_FREQUENCY, "421 HL:ICC", now)
    assert p.is_paused(now + 1)
    p.recover(now + 1)
    assert not p.is_paused(now + 1) and p.state(now + 1) is None
    assert p.reason is None and p.consecutive == 0
    assert p.pause(PauseReason.CONNECTION_FREQUENCY, "421 HL:ICC", now + 2) == now + 62


def test_state_none_when_not_paused_or_expired() -> None:
    p = SitePause()
    assert p.state(0.0) is None and p.next_send_at is None and p.reason is None
    end = p.pause(PauseReason.DOMAIN_LIMIT, "r", 0.0)
    assert p.state(end) is None
    assert p.reason is PauseReason.DOMAIN_LIMIT  # the last cause stays readable


def test_admin_pause_and_resume() -> None:
    p = SitePause()
    p.admin_pause("maintenance", now=5.0)
    assert p.is_paused(10**9) and p.reason is PauseReason.ADMIN and p.next_send_at is None
    st = p.state(6.0)
    assert st is not None and st.reason is PauseReason.ADMIN and st.next_send_at is None and st.reply == "maintenance"
    p.admin_resume()
    assert not p.is_paused(6.0)


def test_admin_resume_keeps_a_running_automatic_pause() -> None:
    p = SitePause(initial=60)
    p.pause(PauseReason.IP_REPUTATION, "554 blocked", 0.0)
    p.admin_pause("ops")
    p.admin_resume()
    assert p.is_paused(30.0) and p.reason is PauseReason.IP_REPUTATION
    p.admin_pause("ops")
    p.recover(30.0)  # Recover clears both
    assert not p.is_paused(30.0)


def test_admin_reason_is_not_an_automatic_pause() -> None:
    with pytest.raises(ValueError, match="admin_pause"):
        SitePause().pause(PauseReason.ADMIN, "", 0.0)


@pytest.mark.parametrize("kw", [{"initial": 0}, {"initial": 10, "maximum": 5}, {"factor": 0.5}])
def test_pause_rejects_bad_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SitePause(**kw)


# endregion
