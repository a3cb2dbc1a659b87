"""scripts/container-test against a fake podman: what it builds and runs, and that it removes what it made.

The real thing (a build and a privileged run) is what CI runs after scripts/test; here only the script's
own logic: options, the engine calls, and cleanup on pass, fail, timeout and --keep-image.
"""

import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "container-test"

FAKE_RUNC = r"""#!/bin/sh
echo "runc $*" >>"$FAKE_DIR/calls"
"""

FAKE_PODMAN = r"""#!/bin/sh
# Records each call; keeps "built" and "running" as files in $FAKE_DIR.
echo "$*" >>"$FAKE_DIR/calls"
while :; do case "$1" in --runtime|--cgroup-manager) shift 2 ;; *) break ;; esac; done
case "$1" in
    info) exit 0 ;;
    --version) echo "podman version 0-fake" ;;
    image) case "$2" in
               inspect) case "$3" in *debian:12) exit 0 ;; *) test -e "$FAKE_DIR/built" ;; esac ;;
               ls) echo "1 MB" ;;
           esac ;;
    build) touch "$FAKE_DIR/built"
           dirname "$TMPDIR" >"$FAKE_DIR/workdir"  # the script's scratch: the build's TMPDIR is in it
           if [ -n "${FAKE_BUILD_HANG:-}" ]; then  # as buildah midway: a RUN step's scratch, a working container
               mkdir "$TMPDIR/buildah123"
               for a; do case "$a" in *-base-*) echo "$a" >"$FAKE_DIR/working" ;; esac; done
               exec sleep 30
           fi ;;
    ps) if [ -e "$FAKE_DIR/working" ]; then
            name=$(sed -e 's,.*/,,' -e 's,:.*,,' "$FAKE_DIR/working"); echo "$name-working-container"
        fi ;;
    rmi) case "$2" in *-base-*) ;; *) rm -f "$FAKE_DIR/built" ;; esac ;;  # the base's alias: an untag
    container) test -e "$FAKE_DIR/running" ;;
    rm) case "$3" in *-working-container) rm -f "$FAKE_DIR/working" ;; *) rm -f "$FAKE_DIR/running" ;; esac ;;
    run) touch "$FAKE_DIR/running"
         if [ -n "${FAKE_HANG:-}" ]; then exec sleep 30; fi
         rm -f "$FAKE_DIR/running"
         exit "${FAKE_RUN_STATUS:-0}" ;;
esac
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the script runs as root (asks sudo otherwise)")


@pytest.fixture
def fake(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    podman = bindir / "podman"
    podman.write_text(FAKE_PODMAN)
    podman.chmod(0o755)
    runc = bindir / "runc"
    runc.write_text(FAKE_RUNC)
    runc.chmod(0o755)

    def run(*args, term_once=None, **env):
        """Runs the script; with term_once=NAME, sends it SIGTERM once the fake made $FAKE_DIR/NAME."""
        full_env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path), **env)
        with subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=full_env) as child:
            if term_once:
                while not (tmp_path / term_once).exists() and child.poll() is None:
                    time.sleep(0.05)
                time.sleep(0.5)  # past the fake's own bookkeeping, into its sleep
                child.terminate()
            out, err = child.communicate(timeout=120)
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        workdir = pathlib.Path((tmp_path / "workdir").read_text().strip())
        assert workdir.name.startswith("nslab-container-test.") and not workdir.exists(), "scratch left behind"
        calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
        # Drop the global options, so that each call reads as the subcommand and its arguments.
        for opt in ("--runtime runc ", "--cgroup-manager cgroupfs "):
            calls = [c.replace(opt, "") for c in calls]
        return proc, calls, tmp_path

    return run


def test_help_and_bad_usage_need_no_root_and_no_engine():
    out = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--keep-image" in out.stdout and "KEPT as a cache" in out.stdout and "set -u" not in out.stdout
    for bad in (["--bogus"], ["--timeout"], ["--timeout", "soon"], ["--timeout=0"]):
        out = subprocess.run([str(SCRIPT), *bad], capture_output=True, text=True)
        assert out.returncode == 2, (bad, out.stderr)
        assert "see --help" in out.stderr


@needs_root
def test_builds_runs_privileged_without_network_then_removes_its_image(fake):
    proc, calls, state = fake("--", "-k", "routing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (build,) = [c for c in calls if c.startswith("build ")]
    assert "--network host" in build and build.endswith("-f Containerfile .")
    image = build.split(" -t ")[1].split()[0]
    assert image.startswith("localhost/nslab-container-test:run-")
    (run,) = [c for c in calls if c.startswith("run ")]
    assert "--privileged --network none" in run and "--rm" in run and "--ulimit nofile=" in run
    assert run.endswith(f"{image} scripts/container-test --in-container -k routing")
    assert calls[-1] == f"rmi {image}" and not (state / "built").exists()
    assert not any(c.startswith("rmi") and "debian" in c for c in calls), "the base image is a kept cache"
    assert "passed: run" in proc.stdout


@needs_root
def test_keep_image_keeps_it_and_netns_only_is_passed_in(fake):
    proc, calls, state = fake("--keep-image", "--netns-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(c.startswith("rmi") and "-base-" not in c for c in calls) and (state / "built").exists()
    (run,) = [c for c in calls if c.startswith("run ")]
    assert run.endswith("localhost/nslab-container-test:latest scripts/container-test --in-container --netns-only")
    assert "kept image localhost/nslab-container-test:latest" in proc.stdout


@needs_root
def test_failed_tests_exit_1_and_still_remove_the_image(fake):
    proc, calls, state = fake(FAKE_RUN_STATUS="1")
    assert proc.returncode == 1
    assert "the tests failed" in proc.stderr
    assert calls[-1].startswith("rmi localhost/nslab-container-test:run-") and not (state / "built").exists()


@needs_root
def test_timeout_removes_the_container_and_the_image(fake):
    proc, calls, state = fake("--timeout", "2", FAKE_HANG="1")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert "did not finish within 2 s" in proc.stderr
    assert any(c.startswith("rm -f nslab-container-test-") for c in calls)
    assert not (state / "running").exists() and not (state / "built").exists()


@needs_root
def test_the_timeout_bounds_the_build_too(fake):
    t0 = time.monotonic()
    proc, calls, state = fake("--timeout", "2", FAKE_BUILD_HANG="1")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 20, "the hung build was stopped, not waited for"
    assert "stopped while building the image" in proc.stderr
    assert not any(c.startswith("run ") for c in calls)
    assert "runc delete -f buildah-buildah123" in calls, "the RUN step it was in is stopped"
    assert not (state / "working").exists(), "the working container is removed"
    (alias,) = {c.split()[-1] for c in calls if c.startswith("tag ")}
    assert f"rmi {alias}" in calls and alias.endswith(":build"), "the base image's alias is untagged"
    assert calls[-1].startswith("rmi localhost/nslab-container-test:run-") and not (state / "built").exists()


@needs_root
def test_a_term_during_the_build_stops_it_and_removes_the_image(fake):
    t0 = time.monotonic()
    proc, calls, state = fake(term_once="working", FAKE_BUILD_HANG="1")
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 20, "the build was stopped at once, not waited for"
    assert not any(c.startswith("run ") for c in calls)
    assert calls[-1].startswith("rmi localhost/nslab-container-test:run-") and not (state / "built").exists()


def test_containerfile_installs_with_install_sh_and_runs_the_script():
    text = (ROOT / "Containerfile").read_text()
    assert "FROM debian:12" in text and "COPY . /src" in text and "scripts/install.sh" in text
    assert 'CMD ["scripts/container-test", "--in-container"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored
    for needed in ("nslab", "scripts", "tests", "topologies", "pyproject.toml", "README.md"):
        assert needed not in ignored


@pytest.mark.parametrize("status, ci_exit, says", [
    (0, 0, "privileged container: passed"),
    (3, 0, "not run, no container engine here and podman could not be installed"),
    (1, 1, "privileged container: FAILED (exit 1)"),
    (124, 1, "privileged container: FAILED (exit 124)"),
])
def test_ci_gates_on_the_container_run_but_not_on_a_missing_engine(tmp_path, status, ci_exit, says):
    """.ci/run as it is, beside stand-ins for scripts/test (passes) and scripts/container-test."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    ci = tmp_path / ".ci" / "run"
    ci.write_text((ROOT / ".ci" / "run").read_text())
    stand_ins = {"test": "exit 0", "container-test": f'echo "$*" >"{tmp_path}/args"; exit {status}'}
    for name, body in stand_ins.items():
        (tmp_path / "scripts" / name).write_text(f"#!/bin/sh\n{body}\n")
    for script in (ci, *(tmp_path / "scripts").iterdir()):
        script.chmod(0o755)
    out = subprocess.run([str(ci)], capture_output=True, text=True, env=dict(os.environ, CI="true"), timeout=60)
    assert out.returncode == ci_exit, out.stdout + out.stderr
    assert says in out.stdout
    timeout = (tmp_path / "args").read_text().split("--timeout ")[1].split()[0]
    # the ipvs tier already ran in scripts/test: the container adds the unit and netns tiers inside budget
    assert "--netns-only" in (tmp_path / "args").read_text() and int(timeout) <= 30 * 60
