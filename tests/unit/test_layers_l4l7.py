"""Layer 4 against layer 7 without a kernel: the haproxy configuration nslab writes, and the judgement of
what the servers saw through IPVS and through the proxy (verify/layers.py)."""

from nslab import model
from nslab.plan.haproxy import config
from nslab.verify import layers


def proxy(root_dir):
    topo = model.loads((root_dir / "topologies" / "l4l7.yaml").read_text(), "l4l7.yaml")
    return model.resolve(topo).proxies[0]


def test_config_round_robin_and_a_backend_per_path(root_dir):
    text = config(proxy(root_dir))
    assert "frontend web\n    bind :80\n    acl path0 path_beg /api\n    use_backend only-rs2 if path0\n" in text
    assert "backend servers\n    balance roundrobin\n    server rs1 10.0.0.11:80\n    server rs2 10.0.0.12:80\n" in text
    assert text.endswith("backend only-rs2\n    server rs2 10.0.0.12:80\n")


C = "192.168.1.10"


def rows(server, peer_ip, n=4, same=False):
    return [(f"{C}:{4000 + k}", server if isinstance(server, str) else server[k % 2],
             f"{C}:{4000 + k}" if same else f"{peer_ip}:{5000 + k}") for k in range(n)]


def test_judge(root_dir):
    p = proxy(root_dir)
    via_proxy = {"/": rows(("rs1", "rs2"), "10.0.0.3"), "/api": rows("rs2", "10.0.0.3")}
    via_ipvs = {"/": rows(("rs1", "rs2"), C, same=True), "/api": rows(("rs1", "rs2"), C, same=True)}
    ok = layers.judge("l", p, "10.0.0.3", via_proxy, "web", via_ipvs)
    assert ok.status == "PASS", ok.summary
    assert "one TCP connection end to end" in ok.summary and "two TCP connections" in ok.summary
    assert "IPVS sent /api to rs1, rs2: it never sees the path" in ok.summary
    wrong_path = dict(via_proxy, **{"/api": rows(("rs1", "rs2"), "10.0.0.3")})
    bad = layers.judge("l", p, "10.0.0.3", wrong_path, "web", via_ipvs)
    assert bad.status == "FAIL" and "the lab's path rule says rs2" in bad.summary
    transparent = {"/": rows("rs1", C, same=True), "/api": rows("rs2", C, same=True)}
    assert layers.judge("l", p, "10.0.0.3", transparent, None, {}).status == "FAIL"
    natted = {k: rows(("rs1", "rs2"), "10.0.0.2") for k in via_ipvs}
    assert layers.judge("l", p, "10.0.0.3", via_proxy, "web", natted).status == "FAIL"
