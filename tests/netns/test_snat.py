"""SNAT lab on the host kernel: the server sees the router's outside address, never the laptop's."""

FETCH = ("import urllib.request; r = urllib.request.urlopen('http://203.0.113.10/', timeout=5); "
         "print(r.headers['X-Client'].rsplit(':', 1)[0])")


def test_server_sees_router_outside_address(make_lab):
    lab = make_lab("snat")
    seen = lab.run("laptop", ["python3", "-c", FETCH])
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() == "203.0.113.2"
