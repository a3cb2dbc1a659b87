"""`nslab schema`: the topology file's JSON Schema, made from nslab/model/spec.py like the loader's key lists.

The schema is valid draft 2020-12; every shipped topology passes it; files with unknown keys, wrong types or
bad enum values fail it; whatever the loader accepts, the schema accepts. And every key the spec declares is
read by build.py, so a key added to the spec alone fails here.
"""

import json
import pathlib

import pytest
import yaml
from jsonschema import Draft202012Validator

from nslab import cli, model
from nslab.errors import TopologyError
from nslab.model import build, spec
from nslab.model.jsonschema import schema, type_schema
from nslab.model.source import Source

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("topologies/broken/*.yaml")])
GOLDEN = ROOT / "tests" / "golden" / "errors"
VALIDATOR = Draft202012Validator(schema())

# Sets every key of every object in the spec at least once, and loads.
FULL = """\
name: full
description: every key
switches: [wan, {name: lan, ageing: 300}]
nodes:
  client:
    interfaces:
      eth0: {switch: wan, address: 192.168.1.10/24}
    gateway: 192.168.1.1
  router:
    forward: true
    interfaces:
      eth0: {switch: wan, addresses: [192.168.1.1/24, 192.168.1.2/24], mac: "02:00:00:00:00:01"}
      eth1: {switch: lan, address: 10.0.0.1/24}
      eth2: {peer: "edge:eth0", address: 172.16.0.1/30}
    routes: [{to: 10.9.0.0/24, via: 172.16.0.2, dev: eth2}]
    sysctls: {net.ipv4.conf.all.rp_filter: 1, net.ipv4.ip_local_port_range: 1024 65000}
    nat: {masquerade: eth0, source: 10.0.0.0/24}
    exec: ["ip addr show", [ip, route]]
  edge:
    interfaces:
      eth0: {peer: "router:eth2", address: 172.16.0.2/30}
      lo: {address: 10.9.0.1/24}
    gateway: 172.16.0.1
    nat: [{masquerade: eth0}, {dnat: 8080, to: 10.0.0.11:80, in: eth0, protocol: tcp}]
  director:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.2/24}
    gateway: 10.0.0.1
  proxy:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.40/24}
    gateway: 10.0.0.1
    proxy: {port: 8080, servers: [rs1], paths: {/api: rs1}}
  rs1:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.11/24}
    gateway: 10.0.0.2
    app: {type: http, port: 8080, protocol: tcp, reply_size: 2048}
  rs2:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.12/24, vlan: 1, impair: {delay: 20ms, jitter: 1.5ms, loss: 0.5%, rate: 100mbit}}
    gateway: 10.0.0.2
    app: echo
  sorry:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.20/24}
    gateway: 10.0.0.2
  d2:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.3/24}
  d3:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.4/24}
services:
  web:
    director: director
    vip: 10.0.0.100:80
    protocol: tcp
    scheduler: wrr
    forward: nat
    persistence: 300
    vip_interface: eth0
    arp_tuning: true
    rp_filter_relax: true
    return_path_check: true
    real_servers:
      rs1: {weight: 2, address: 10.0.0.11, port: 8080}
      rs2:
    health: {check: http, path: /, interval: 1, timeout: 1, retries: 2}
    on_failure: weight0
    sorry_server: sorry
  pair:
    directors: [d2, d3]
    vip: 10.0.0.200:7
    forward: dr
    real_servers: {rs2: }
expect:
  - {from: client, to: web, reaches: true, path: [client, router, director], reply_path: [director, router, client],
     same_ip: false, traceroute: false, switch_learning: false, connections: 2}
  - {from: client, to: web, share: {rs1: 2, rs2: 1}}
"""

GOOD = [FULL, (ROOT / "tests/unit/test_model_errors.py").read_text().split('GOOD = """\\\n')[1].split('"""')[0]]

# Golden inputs the schema alone can tell are wrong: unknown keys, wrong types, bad enum values and names.
GOLDEN_REJECTED = ["unknown-key-typo", "impair-bad", "app-reply-size", "line-breaks-unicode", "scheduler-unknown", "vip-number", "vip-without-port",
                   "gateway-boolean", "addresses-as-numbers", "address-without-prefix", "address-bad-octet",
                   "lab-name-invalid", "name-missing", "nodes-empty", "node-name-invalid", "node-name-reserved",
                   "interface-name-too-long", "interface-named-all", "interface-named-tunl0", "switch-named-lo",
                   "switch-empty", "mac-multicast", "mac-all-zero", "exec-nul", "route-dev-empty",
                   "sysctl-not-network", "sysctl-global", "expect-same-ip-not-bool",
                   "expect-traceroute-not-bool", "switch-settings-bad",
                   "expect-connections-zero", "dnat-bad", "vlan-bad"]

# (what, replace this in FULL, with this)
HAND_MADE = [
    ("unknown top key", "description: every key", "descripton: every key"),
    ("unknown service key", "    persistence: 300", "    persistance: 300"),
    ("forward not a boolean", "    forward: true", "    forward: yes please"),
    ("forwarding method", "    forward: nat", "    forward: snat"),
    ("protocol", "    protocol: tcp\n", "    protocol: sctp\n"),
    ("app type", "app: echo", "app: ftp"),
    ("app without type", "app: {type: http, port: 8080, protocol: tcp, reply_size: 2048}", "app: {port: 8080}"),
    ("reply size range", "reply_size: 2048", "reply_size: 0"),
    ("weight range", "weight: 2", "weight: -1"),
    ("persistence type", "persistence: 300", "persistence: five minutes"),
    ("port range", "port: 8080}\n", "port: 70000}\n"),
    ("nat without masquerade", "nat: [{masquerade: eth0}, ", "nat: [{source: 10.0.0.0/24}, "),
    ("dnat without a port", "{dnat: 8080, to: 10.0.0.11:80,", "{dnat: http, to: 10.0.0.11:80,"),
    ("vlan out of range", "10.0.0.12/24, vlan: 1,", "10.0.0.12/24, vlan: 4095,"),
    ("vlan list empty", "10.0.0.12/24, vlan: 1,", "10.0.0.12/24, vlan: [],"),
    ("masquerade and dnat", "{dnat: 8080, to: 10.0.0.11:80,", "{masquerade: eth0, dnat: 8080, to: 10.0.0.11:80,"),
    ("route without via or dev", "{to: 10.9.0.0/24, via: 172.16.0.2, dev: eth2}", "{to: 10.9.0.0/24}"),
    ("switch and peer", "eth0: {peer: \"router:eth2\",", "eth0: {switch: lan, peer: \"router:eth2\","),
    ("exec item", "exec: [\"ip addr show\", [ip, route]]", "exec: [\"ip addr show\", {ip: route}]"),
    ("switches not a list", "switches: [wan, {name: lan, ageing: 300}]", "switches: wan"),
    ("switch ageing", "{name: lan, ageing: 300}", "{name: lan, ageing: -1}"),
    ("switch without a name", "{name: lan, ageing: 300}", "{ageing: 300}"),
    ("reaches not a boolean", "reaches: true", "reaches: 1"),
    ("share weight range", "share: {rs1: 2, rs2: 1}", "share: {rs1: -2, rs2: 1}"),
    ("share empty", "share: {rs1: 2, rs2: 1}", "share: {}"),
    ("impair loss", "loss: 0.5%", "loss: 101%"),
    ("impair rate unit", "rate: 100mbit", "rate: 100mbps"),
    ("proxy without servers", "proxy: {port: 8080, servers: [rs1], paths: {/api: rs1}}", "proxy: {port: 8080}"),
    ("proxy path", "paths: {/api: rs1}", "paths: {api: rs1}"),
    ("impair empty", "impair: {delay: 20ms, jitter: 1.5ms, loss: 0.5%, rate: 100mbit}", "impair: {}"),
]


def schema_errors(data):
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(data)]


def loads(text):
    try:
        return model.loads(text, "x.yaml")
    except TopologyError:
        return None


def test_schema_is_valid_draft_2020_12():
    s = schema()
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] and s["title"] and s["additionalProperties"] is False
    assert set(s["$defs"]) == set(spec.OBJECTS) - {"topology"}


def test_every_property_is_described():
    s = schema()
    for obj in [s, *s["$defs"].values()]:
        assert obj["description"] and obj["additionalProperties"] is False
        for name, prop in obj["properties"].items():
            assert prop.get("description"), name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_validate(path):
    assert schema_errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("name", GOLDEN_REJECTED)
def test_golden_inputs_fail(name):
    path = GOLDEN / f"{name}.yaml"
    assert schema_errors(yaml.safe_load(path.read_text())), f"{name}: the schema takes what the loader refuses"


@pytest.mark.parametrize("what, old, new", HAND_MADE, ids=[h[0] for h in HAND_MADE])
def test_hand_made_fail(what, old, new):
    assert FULL.count(old) == 1, what
    text = FULL.replace(old, new)
    assert loads(text) is None, f"{what}: the loader takes it"
    assert schema_errors(yaml.safe_load(text)), f"{what}: the schema takes it"


def _loadable_yaml(path):
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError, RecursionError):
        return None


def test_what_the_loader_accepts_the_schema_accepts():
    texts = [p.read_text() for p in [*SHIPPED, *sorted(GOLDEN.glob("*.yaml"))]] + GOOD + [
        FULL.replace("    gateway: 10.0.0.2\n    app: echo", "    gateway: 10.0.0.2\n    app:"),  # nulls
        FULL.replace("      lo: {address: 10.9.0.1/24}", "      lo:"),
        FULL.replace("rs1: {weight: 2, address: 10.0.0.11, port: 8080}", "rs1: {weight: 0}"),
        FULL.replace("addresses: [192.168.1.1/24, 192.168.1.2/24]", "addresses: 192.168.1.1/24"),
    ]
    accepted = 0
    for text in texts:
        if loads(text) is not None:
            accepted += 1
            assert schema_errors(yaml.safe_load(text)) == [], text[:200]
    assert accepted >= len(SHIPPED) + len(GOOD) + 4


class Reads(dict):
    """A mapping that remembers which keys were read (get / [])."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _track(obj: spec.Obj, data, path, found):
    """Wrap every mapping the spec calls an object in Reads, walking the data by the spec."""
    data = Reads({k: _value(obj.fields[k].type, v, path + (k,), found) if k in obj.fields else v
                  for k, v in data.items()})
    found.append((obj, data, path))
    return data


def _value(t, v, path, found):
    if isinstance(t, spec.Ref) and isinstance(v, dict):
        return _track(spec.OBJECTS[t.obj], v, path, found)
    if isinstance(t, spec.List) and isinstance(v, list):
        return [_value(t.item, x, path + (i,), found) for i, x in enumerate(v)]
    if isinstance(t, spec.Map) and isinstance(v, dict):
        return {k: _value(t.value, x, path + (k,), found) for k, x in v.items()}
    if isinstance(t, spec.Either):
        for form in t.forms:
            if VALIDATOR.evolve(schema=_form_schema(form)).is_valid(v):
                return _value(form, v, path, found)
    return v


def _form_schema(form):
    return {**type_schema(form), "$defs": schema()["$defs"]}


def test_every_spec_key_is_read_by_build():
    assert model.loads(FULL, "x.yaml")
    found = []
    data = _track(spec.TOPOLOGY, yaml.safe_load(FULL), (), found)
    topo, diags = build.build(Source("x.yaml", data, {}, FULL))
    assert diags.problems == []
    declared = {(o.name, k) for o in spec.OBJECTS.values() for k in o.names}
    given = {(o.name, k) for o, d, _ in found for k in d}
    assert declared - given == set(), "FULL must set every key the spec declares"
    unread = {(o.name, ".".join(map(str, p)), k) for o, d, p in found for k in d if k not in d.read}
    assert unread == set(), "keys the spec declares but build.py never reads"


def test_key_lists_and_names_come_from_the_spec():
    assert (build.TOP_KEYS, build.NODE_KEYS, build.IF_KEYS, build.SERVICE_KEYS) == (
        spec.TOPOLOGY.names, spec.NODE.names, spec.INTERFACE.names, spec.SERVICE.names)
    assert build.LAB_NAME is spec.LAB_NAME and build.IFNAME is spec.IFNAME


def test_unknown_key_hint_uses_the_spec():
    with pytest.raises(TopologyError) as e:
        model.loads(FULL.replace("    persistence: 300", "    persistance: 300"), "x.yaml")
    assert "did you mean 'persistence'?" in str(e.value)


def test_cli_prints_and_writes_the_schema(capsys, tmp_path):
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema()
    out = tmp_path / "nslab.schema.json"
    assert cli.main(["schema", "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == schema() and capsys.readouterr().out == ""
    assert cli.main(["schema", "--output", str(tmp_path / "no" / "such.json")]) == 2
