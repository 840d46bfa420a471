"""Draining before the batch job's walltime ends: finish the running task, start no other.

The drain time can pass while user code runs in the main thread, and the tasks queued
behind it should move to other engines at once, not when that task ends. So a timer
thread announces the drain (``drain_request`` on the main socket) when the main thread is
inside a task, and the main loop announces it otherwise. One lock makes the two take
turns on the socket: the timer sends only while a task runs (the loop does not touch the
socket then), and a task starts only while no drain was declared, so the ``running`` list
the controller gets is exactly what will still finish here.
"""

import threading
import time

from .logs import logger


def drain_time_text(drain_at):
    """``2026-11-21 23:59:50 UTC`` for an epoch time (log lines and error messages)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(drain_at))


class DrainSchedule:
    """When this engine stops taking work, and who tells the controller.

    ``announce(running)`` sends the drain_request; it is called once, holding the lock,
    either from the timer thread (``running`` = the task in user code) or from the main
    thread between tasks (``running`` = [])."""

    def __init__(self, drain_at, announce):
        self.drain_at = drain_at
        self._announce = announce
        self._lock = threading.Lock()
        self._running = None      # msg_id of the task in user code (the socket is free)
        self._timer = None
        self.draining = False     # no task may start any more
        self.announced = False    # the controller was told

    def start(self):
        """Arm the timer (after registration: before it there is no one to tell)."""
        if self.drain_at is None:
            return
        delay = self.drain_at - time.time()
        if delay <= 0:
            logger.warning("the drain time %s has already passed: draining now",
                           drain_time_text(self.drain_at))
        self._timer = threading.Timer(max(0.0, delay), self._on_time)
        self._timer.daemon = True
        self._timer.start()

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()

    def due(self):
        """Whether the engine must drain now (main thread, between tasks)."""
        return self.draining or (self.drain_at is not None and time.time() >= self.drain_at)

    def seconds_left(self):
        """Seconds until the drain time (None without one); the loop wakes up for it."""
        return None if self.drain_at is None else max(0.0, self.drain_at - time.time())

    def begin_task(self, msg_id):
        """Main thread, about to run user code: False once draining (the task must not run)."""
        with self._lock:
            if self.draining:
                return False
            self._running = msg_id
            return True

    def end_task(self):
        """Main thread, user code returned: from now on the socket is the loop's again."""
        with self._lock:
            self._running = None

    def announce_from_loop(self):
        """Main thread, between tasks: declare the drain and tell the controller, once."""
        with self._lock:
            self.draining = True
            if not self.announced:
                self.announced = True
                self._announce([])

    def _on_time(self):
        with self._lock:
            if self.draining:
                return
            self.draining = True
            if self._running is None:
                return  # the loop is between tasks: it sees due() and announces itself
            logger.info("drain time %s reached while task %s runs: it finishes here, "
                        "queued tasks go back to the controller", drain_time_text(self.drain_at),
                        self._running)
            try:
                self.announced = True
                self._announce([self._running])
            except Exception as e:  # the loop announces again when the task ends
                self.announced = False
                logger.error("could not announce the drain from the timer: %s", e)


def refusal(engine_id, drain_at, msg):
    """Reply content for a task that arrived or waited here after the drain began."""
    return {
        "status": "error",
        "ename": "EngineDraining",
        "evalue": (f"engine {engine_id} is draining before its batch job's walltime ends "
                   f"(drain time {drain_time_text(drain_at)}): it finishes its running task "
                   f"and takes no new ones, so {msg.msg_type} {msg.msg_id} did not run; send it "
                   "to another engine"),
        "traceback": "",
        "engine_info": {"engine_id": engine_id},
    }
