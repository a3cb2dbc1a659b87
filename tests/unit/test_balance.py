"""The scheduler rules and the judgements verify makes of a running service (verify/balance.py), on made-up
observations: what lc, wlc, sed and nq pick from a director's table, stickiness, director bytes, shares."""

import pytest

from nslab import model
from nslab.verify import balance, concepts
from nslab.verify.balance import Load

LAB = """
name: bal
switches: [lan]
nodes:
  client: {interfaces: {eth0: {switch: lan, addresses: [10.0.0.5/24, 10.0.0.6/24]}}}
  director: {interfaces: {eth0: {switch: lan, address: 10.0.0.2/24}}}
  rs1: {interfaces: {eth0: {switch: lan, address: 10.0.0.11/24}}, app: http}
  rs2: {interfaces: {eth0: {switch: lan, address: 10.0.0.12/24}}, app: http}
services:
  web:
    director: director
    vip: 10.0.0.100:80
    scheduler: SCHED
    forward: FWD
    real_servers: {rs1: {weight: W1}, rs2: {weight: 1}}
"""


def service(sched="lc", fwd="dr", w1=1, extra=""):
    text = LAB.replace("SCHED", sched).replace("FWD", fwd).replace("W1", str(w1))
    return model.resolve(model.loads(text.replace("    forward:", extra + "    forward:"))).services[0]


@pytest.mark.parametrize("sched,table,want", [
    ("lc", {"rs1": Load(0, 5, 1), "rs2": Load(1, 0, 1)}, {"rs1"}),       # an active one costs 256 inactive ones
    ("lc", {"rs1": Load(0, 300, 1), "rs2": Load(1, 0, 1)}, {"rs2"}),
    ("lc", {"rs1": Load(2, 0, 5), "rs2": Load(1, 0, 1)}, {"rs2"}),       # lc ignores weights
    ("wlc", {"rs1": Load(2, 0, 5), "rs2": Load(1, 0, 1)}, {"rs1"}),      # 512/5 < 256/1
    ("lc", {"rs1": Load(1, 0, 1), "rs2": Load(1, 0, 1)}, {"rs1", "rs2"}),  # a tie: either
    ("lc", {"rs1": Load(0, 0, 0), "rs2": Load(3, 0, 1)}, {"rs2"}),       # weight 0: drained
    ("sed", {"rs1": Load(0, 0, 1), "rs2": Load(3, 0, 5)}, {"rs2"}),      # (3+1)/5 < (0+1)/1
    ("nq", {"rs1": Load(0, 0, 1), "rs2": Load(3, 0, 5)}, {"rs1"}),       # idle first, whatever the weight
    ("nq", {"rs1": Load(1, 0, 1), "rs2": Load(3, 0, 5)}, {"rs2"}),       # none idle: as sed
])
def test_choice_follows_the_kernel_rule(sched, table, want):
    assert balance.choice(sched, table) == want


def test_least_passes_when_every_new_connection_goes_where_the_rule_says():
    svc = service("lc")
    steps = [({"rs1": Load(0, k, 1), "rs2": Load(3, 0, 1)}, "rs1") for k in range(6)]
    r = balance.check_least("scheduler", svc, "rs2", 3, steps)
    assert r.status == "PASS" and "went rs1 6" in r.summary and "rr would have given rs2 3" in r.summary


def test_least_fails_on_a_connection_to_the_loaded_server():
    steps = [({"rs1": Load(0, 0, 1), "rs2": Load(3, 0, 1)}, "rs1"), ({"rs1": Load(0, 1, 1), "rs2": Load(3, 0, 1)}, "rs2")]
    r = balance.check_least("scheduler", service("wlc"), "rs2", 3, steps)
    assert r.status == "FAIL" and r.summary.startswith("wlc: new connection 2 went to rs2")


def test_least_without_two_live_servers_or_a_loaded_one_is_a_skip():
    assert balance.check_least("scheduler", service("lc", w1=0), "rs2", 3, []).status == "SKIP"
    assert balance.check_least("scheduler", service("lc"), None, 0, []).status == "SKIP"


def test_sticky():
    svc = service("sh")
    assert balance.check_sticky("s", svc, {"a": ["rs1"] * 3, "b": ["rs2"] * 3}).status == "PASS"
    moved = balance.check_sticky("s", svc, {"a": ["rs1", "rs2", "rs1"], "b": ["rs2"] * 3})
    assert moved.status == "FAIL" and "from a went to rs1 then rs2" in moved.summary
    # two addresses may hash to one server by chance: not judged below four
    assert balance.check_sticky("s", svc, {"a": ["rs1"], "b": ["rs1"]}).status == "PASS"
    four = {x: ["rs1"] * 2 for x in "abcd"}
    assert balance.check_sticky("s", svc, four).status == "FAIL"
    persistent = service("rr", extra="    persistence: 60\n")
    assert balance.check_sticky("s", persistent, {"a": ["rs1"], "b": ["rs1"]}).status == "FAIL"
    assert balance.check_sticky("s", service("dh"), four).status == "PASS"
    assert balance.check_sticky("s", service("dh"), {"a": ["rs1"], "b": ["rs2"]}).status == "FAIL"


def test_experiment_chosen_by_scheduler():
    assert concepts.experiment(service("sh")) == "sticky"
    assert concepts.experiment(service("rr", extra="    persistence: 60\n")) == "sticky"
    assert concepts.experiment(service("nq")) == "least"
    assert concepts.experiment(service("wrr")) is None
    assert concepts.experiment(service("lc", extra="    protocol: udp\n")) is None


def test_director_bytes():
    nat, dr = service("rr", "nat", extra="    return_path_check: false\n"), service("rr", "dr")
    delta = {"rs1": {"inbytes": 4000, "outbytes": 600000, "conns": 10}}
    assert balance.check_director_bytes("b", nat, delta, 10, 50000).status == "PASS"
    short = balance.check_director_bytes("b", nat, delta, 20, 50000)
    assert short.status == "FAIL" and "only 600000 B" in short.summary
    assert balance.check_director_bytes("b", dr, delta, 10, 50000).status == "FAIL"
    ok = balance.check_director_bytes("b", dr, {"rs1": {"inbytes": 4000, "outbytes": 0}}, 10, 50000)
    assert ok.status == "PASS" and "0 B out" in ok.summary
    assert balance.check_director_bytes("b", dr, {"rs1": {"inbytes": 0, "outbytes": 0}}, 0, 5).status == "SKIP"


def test_expected_share():
    svc = service("wrr")
    exp = model.loads(LAB.replace("SCHED", "wrr").replace("FWD", "dr").replace("W1", "1")
                      + "expect: [{from: client, to: web, share: {rs1: 3, rs2: 1}}]\n").expect[0]
    assert balance.check_expected_share(0, exp, svc, {"rs1": 30, "rs2": 10}).status == "PASS"
    bad = balance.check_expected_share(0, exp, svc, {"rs1": 20, "rs2": 20})
    assert bad.status == "FAIL" and "services.web.real_servers.rs1.weight" in bad.summary
    assert balance.check_expected_share(0, exp, svc, {}).status == "FAIL"
