"""Link impairment without a kernel: the model's units, the plan's tc commands, the neighbour verify pings
and the judgement of measured round trips and losses."""

import pathlib

from nslab import api, model
from nslab.verify import impair

LINE = "{delay: 25ms, jitter: 2ms, loss: 2%, rate: 10mbit}"
LAB = (pathlib.Path(__file__).parents[1] / "labs" / "impaired-line.yaml").read_text()


def resolved(edit=lambda t: t):
    return model.resolve(model.loads(edit(LAB), "impair.yaml"))


def test_units_become_microseconds_percent_and_bits():
    fact = resolved().impairs[0]
    m = fact.impair
    assert (m.delay_us, m.jitter_us, m.loss_pct, m.rate_bit) == (25000, 2000, 2.0, 10_000_000)
    assert (fact.node, fact.iface, fact.neighbour, str(fact.neighbour_ip)) == ("router", "eth2", "far", "203.0.113.10")
    assert fact.back == m  # far's end of the line is impaired too: the replies pass it
    assert fact.neighbour_iface == "eth0"  # where the line's bytes arrive at far


def test_plan_prints_netem_then_tbf():
    topo = model.loads(LAB, "impair.yaml")
    lines = [c for a in api.plan(topo) if type(a).__name__ == "SetImpair" for c in a.commands()]
    assert lines == [
        "ip netns exec impair-router tc qdisc replace dev eth2 root handle 1: netem delay 25000us 2000us loss 2%",
        "ip netns exec impair-router tc qdisc replace dev eth2 parent 1:1 handle 10: tbf rate 10000000bit burst "
        "12500 latency 200ms",
        "ip netns exec impair-far tc qdisc replace dev eth0 root handle 1: netem delay 25000us 2000us loss 2%",
        "ip netns exec impair-far tc qdisc replace dev eth0 parent 1:1 handle 10: tbf rate 10000000bit burst "
        "12500 latency 200ms"]


def test_judge_round_trips_and_losses():
    fact = resolved().impairs[0]  # 50 ms ±4 ms a round trip, 3.96% loss
    ok = impair.judge("i", fact, [51.0 + k % 5 for k in range(38)], 40)
    assert ok.status == "PASS" and "for a 50 ms delay ±4" in ok.summary, ok.summary
    fast = impair.judge("i", fact, [0.2] * 40, 40)
    assert fast.status == "FAIL" and "not in place" in fast.summary
    lossy = impair.judge("i", fact, [51.0] * 20, 40)
    assert lossy.status == "FAIL" and "20 of 40 pings" in lossy.summary
    assert impair.judge("i", fact, [], 40).status == "FAIL"
    one_way = resolved(lambda t: t.replace("        impair: " + LINE + "\n    gateway", "    gateway"))
    alone = one_way.impairs[0]
    assert alone.back is None
    assert impair.judge("i", alone, [26.0] * 40, 40).status == "PASS"
    assert impair.judge("i", alone, [300.0] * 40, 40).status == "FAIL"  # far over the delay


def test_judge_rate_against_the_line():
    fact = resolved().impairs[0]  # 10 Mbit/s; tbf's bucket 12500 bytes: 0.05 Mbit/s more over a 2 s window
    ok = impair.judge_rate("r", fact, offered_bit=40e6, got_bit=9.6e6, window=2.0, sent=7000, drops={"tbf": 5000})
    assert ok.status == "PASS" and "carried 9.60 Mbit/s for a 10.00 Mbit/s rate" in ok.summary, ok.summary
    assert "tbf 5000" in ok.evidence[1]
    over = impair.judge_rate("r", fact, offered_bit=40e6, got_bit=11.5e6, window=2.0)
    assert over.status == "FAIL" and "not in place" in over.summary, over.summary
    under = impair.judge_rate("r", fact, offered_bit=40e6, got_bit=1e6, window=2.0)
    assert under.status == "FAIL" and "only 1.00 Mbit/s" in under.summary, under.summary
    slow = impair.judge_rate("r", fact, offered_bit=11e6, got_bit=9e6, window=2.0)
    assert slow.status == "SKIP" and "offered only 11.00 Mbit/s" in slow.summary, slow.summary


def test_a_line_slower_than_a_request_waits_is_named_when_requests_timed_out():
    slow = resolved(lambda t: t.replace(LINE, "{delay: 1500ms}"))  # both ends: 3 s a round trip
    timed_out = {"ok": 0, "errors": {"TimeoutError": 3}}
    (r,) = impair.judge_timeouts(slow, timed_out)  # one line, named once though impaired on both ends
    assert r.status == "FAIL" and r.name == "impair-timeout:router:eth2", r
    assert "3 request(s) timed out" in r.summary and "at least 3000 ms" in r.summary and "2 s" in r.summary
    assert impair.judge_timeouts(slow, {"ok": 3, "errors": {}}) == []  # nothing timed out: nothing to say
    assert impair.judge_timeouts(resolved(), timed_out) == []  # 50 ms: not the line's doing


def test_the_limits_validate_takes_fit_the_kernels_fields():
    """The extremes validate accepts pack into netem's and tbf's 32-bit fields as kernel/tc.py hands them to
    pyroute2; a step past them (300s, 8bit, 35gbit) did not, and up failed after validate had said ok."""
    from pyroute2.netlink.rtnl.tcmsg import plugins, tcmsg

    from nslab.kernel.tc import _netem_args
    from nslab.plan.actions import SetImpair

    def packs(kind, **kw):
        m = tcmsg()
        m["attrs"] = [["TCA_KIND", kind], ["TCA_OPTIONS", plugins[kind].get_parameters(kw)]]
        m.encode()

    for line in ("{delay: 60s, jitter: 60s, loss: 100%, rate: 1kbit}", "{delay: 1us, rate: 32gbit}"):
        m = resolved(lambda t: t.replace(LINE, line)).impairs[0].impair
        a = SetImpair(ns="x", dev="eth0", delay_us=m.delay_us, jitter_us=m.jitter_us, loss_pct=m.loss_pct,
                      rate_bit=m.rate_bit)
        packs("netem", **_netem_args(a))
        packs("tbf", rate=f"{a.rate_bit}bit", burst=a.burst, latency=f"{a.TBF_LATENCY_MS}ms")
