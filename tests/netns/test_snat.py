"""SNAT lab on the host kernel: the server sees the router's outside address, never the laptop's."""

FETCH = ("import urllib.request; r = urllib.request.urlopen('http://203.0.113.10/', timeout=5); "
         "print(r.headers['X-Client'].rsplit(':', 1)[0])")


def test_server_sees_router_outside_address(make_lab):
    lab = make_lab("snat")
    seen = lab.run("laptop", ["python3", "-c", FETCH])
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() == "203.0.113.2"


def _ruleset(lab, node):
    import json
    out = lab.run(node, ["nft", "-j", "list", "ruleset"], check=True).stdout
    items = [next(iter(i.items())) for i in json.loads(out)["nftables"]]
    return {"tables": [v["name"] for k, v in items if k == "table"],
            "chains": [v["name"] for k, v in items if k == "chain"],
            "rules": [v.get("comment") for k, v in items if k == "rule"]}


def test_undo_removes_only_its_own_rule_and_replayed_rule_is_recognised(root_dir, tmp_path):
    import os
    import subprocess

    from nslab import api, model
    from nslab.kernel import apply as kapply
    from nslab.kernel.session import Session
    from nslab.plan import actions as A

    text = (root_dir / "topologies" / "snat.yaml").read_text().replace(
        "      - {masquerade: eth1, source: 192.168.0.0/24}\n",
        "      - {masquerade: eth1, source: 192.168.0.0/24}\n      - {masquerade: eth0}\n")
    name = f"sn{os.getpid() % 1000}"
    topo = model.loads(text.replace("name: snat\n", f"name: {name}\n"), str(tmp_path / "snat2.yaml"))
    with api.Lab(topo) as lab:
        masq = [a for a in api.plan(lab.topo) if isinstance(a, A.Masquerade)]
        assert [a.comment for a in masq] == ["nslab masquerade eth1 192.168.0.0/24", "nslab masquerade eth0 any"]
        assert _ruleset(lab, "router") == {"tables": ["nslab"], "chains": ["postrouting"],
                                           "rules": [a.comment for a in masq]}
        executor = kapply.EXECUTORS[A.Masquerade]
        with Session() as s:
            executor.undo(s, masq[1], None)
        # the other rule, its chain and its table stay
        assert _ruleset(lab, "router") == {"tables": ["nslab"], "chains": ["postrouting"], "rules": [masq[0].comment]}

        # the rule typed by hand from `nslab plan` is the rule `up` would add: up adds nothing
        for argv in masq[1].argvs():
            subprocess.run(argv, check=True)
        assert lab.up().changed == []
        assert _ruleset(lab, "router")["rules"] == [a.comment for a in masq]

        with Session() as s:
            for a in masq:
                executor.undo(s, a, None)
        # the last nslab rule took the chain and table nslab made along
        assert _ruleset(lab, "router") == {"tables": [], "chains": [], "rules": []}
