"""A link that goes down while it is sniffed must not end the capture of the others (or its own, once up)."""

import subprocess


def test_capture_survives_a_link_going_down(make_lab):
    lab = make_lab("routing")
    with lab.capture() as cap:
        tap = next(t for t in cap.taps if t.in_fabric and t.node == "host1")
        for state in ("down", "up"):
            subprocess.run(["ip", "-n", tap.ns, "link", "set", tap.ifname, state], check=True)
        # host1's link carries traffic again once up; the other links never stopped
        ping = lab.run("host1", ["ping", "-c", "1", "-W", "5", "192.168.2.10"])
        assert ping.returncode == 0, ping.stdout
    assert tap.label in cap.went_down
    seen_on = {f.link for f in cap.frames if f.ip and f.ip.proto == "icmp"}
    assert tap.label in seen_on and len(seen_on) >= 3, seen_on
