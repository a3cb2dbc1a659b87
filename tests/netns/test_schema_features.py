"""The rest of the schema on the host kernel: direct links, several addresses, dev routes, MACs,
per-node sysctls and start-up commands (run once, not again on a second up)."""

import json

from nslab import api, model

TOPOLOGY = """\
name: feat
nodes:
  a:
    interfaces:
      eth0: {peer: b:eth0, addresses: [10.1.0.1/24, 10.1.1.1/24], mac: 02:00:00:00:0a:01}
    routes:
      - {to: 10.9.0.0/16, dev: eth0}
    sysctls: {net.ipv4.icmp_echo_ignore_all: 1}
    exec:
      - ip addr add 10.7.7.7/32 dev lo
  b:
    interfaces:
      eth0: {peer: a:eth0, address: 10.1.0.2/24}
"""


def test_direct_link_addresses_routes_sysctls_and_exec(tmp_path):
    path = tmp_path / "feat.yaml"
    path.write_text(TOPOLOGY)
    with api.Lab(str(path), name="tfeat") as lab:
        a = json.loads(lab.run("a", ["ip", "-j", "addr", "show"]).stdout)
        addrs = {f"{i['local']}/{i['prefixlen']}" for link in a for i in link.get("addr_info", [])}
        assert {"10.1.0.1/24", "10.1.1.1/24", "10.7.7.7/32"} <= addrs  # both addresses, and exec ran
        eth0 = next(link for link in a if link["ifname"] == "eth0")
        assert eth0["address"] == "02:00:00:00:0a:01"
        route = json.loads(lab.run("a", ["ip", "-j", "route", "show", "10.9.0.0/16"]).stdout)
        assert route and route[0]["dev"] == "eth0" and "gateway" not in route[0]
        # b reaches a over the direct cable, but a ignores echo requests (its sysctl)
        assert lab.run("b", ["ping", "-c", "1", "-W", "1", "10.1.0.1"]).returncode == 1
        assert lab.run("a", ["ping", "-c", "1", "-W", "2", "10.1.0.2"]).returncode == 0
        # a second up changes nothing and does not run exec again (it would fail: address exists)
        assert api.up(model.loads(TOPOLOGY.replace("name: feat", "name: tfeat"), str(path))).changed == []
