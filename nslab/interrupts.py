"""Signals that end a run the way Ctrl-C does, so its cleanup (a lab's teardown, killing the VM) still runs."""

import signal
import threading


def interrupt_on(*signals) -> callable:
    """Make each of signals raise KeyboardInterrupt in the main thread, as SIGINT does, where nothing else
    handles it (the default would end the process without any cleanup). Returns what puts the old handlers
    back. Off the main thread, where Python can't set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, _interrupt) for sig in signals if signal.getsignal(sig) == signal.SIG_DFL}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
