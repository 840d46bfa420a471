"""Registering with the controller: one request, one reply, a deadline.

Separate from the message loop because its failure modes are about setup
(nothing listening, a stale connection file, the controller refusing us) and
each must end the process with a message that says what to check.
"""

import os
import socket
import time

import zmq

from ..error import ProtocolError, SignatureError
from .logs import logger
from .wire import unsigned_rejection


class RegistrationFailed(Exception):
    """Registration did not succeed; the message says why and what to do."""


#: Environment variables naming the batch job an engine runs in, most specific first
#: (an array job's id, not the task's own job id, since the launcher records the array).
BATCH_JOB_VARIABLES = ("LSB_JOBID", "PBS_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")


def batch_job_id(environ=os.environ):
    """The id of the batch job this process runs in, or None outside one.

    Sent at registration so a launcher can tell which of its jobs an engine
    belongs to (to stop a job's engines, or show the job in a status table)
    even when the engine runs on another node. Grid Engine's JOB_ID is a common
    name, so it counts only beside SGE_TASK_ID, which Grid Engine always sets."""
    for name in BATCH_JOB_VARIABLES:
        if environ.get(name):
            return environ[name]
    if environ.get("JOB_ID") and "SGE_TASK_ID" in environ:
        return environ["JOB_ID"]
    return None


def registration_content(uuid, heart_identity, iopub_identity, requested_id=None, info=None,
                         books_identity=None):
    job = batch_job_id()
    if job is not None:
        info = {"batch_job": job, **(info or {})}
    content = {
        "uuid": uuid,
        "heart": heart_identity,
        "iopub": iopub_identity,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
    if books_identity is not None:
        content["books"] = books_identity
    if requested_id is not None:
        content["requested_id"] = int(requested_id)
    if info:
        content["info"] = dict(info)
    return content


#: How long a registration interrupted by a signal still waits for the controller's reply.
STOP_GRACE = 2.0


def register(session, main_socket, url, content, timeout, should_stop=lambda: False):
    """Send ``registration_request`` and return the ok reply's content.

    Polls in short slices so a signal can interrupt the wait: once ``should_stop`` returns
    true, the reply is awaited ``STOP_GRACE`` seconds more, then ``None`` is returned. (The
    controller may have registered us already: with the reply, the caller can unregister
    at once instead of leaving a ghost engine until the heartbeat gives up on it.)"""
    header = session.send(main_socket, "registration_request", content)
    deadline = time.monotonic() + timeout
    stopping = False
    while True:
        if not stopping and should_stop():
            stopping, deadline = True, min(deadline, time.monotonic() + STOP_GRACE)
        remaining = deadline - time.monotonic()
        if remaining <= 0 and stopping:
            return None
        if remaining <= 0:
            raise RegistrationFailed(
                f"no controller answered at {url} within {timeout:g} s: is it running? "
                "wrong connection file?")
        if not main_socket.poll(int(min(remaining, 1.0) * 1000) + 1, zmq.POLLIN):
            continue
        frames = main_socket.recv_multipart()
        rejected = unsigned_rejection(frames)
        if rejected is not None:
            raise RegistrationFailed(
                f"the controller at {url} refused our signature ({rejected}): the key in the "
                "connection file does not match the controller's; use the current connection file")
        try:
            msg = session.unpack(frames)
        except (ProtocolError, SignatureError) as e:
            logger.warning("dropped a message while registering: %s", e)
            continue
        if msg.msg_type != "registration_reply" or msg.parent.get("msg_id") != header["msg_id"]:
            logger.warning("dropped %s received before registration completed", msg.msg_type)
            continue
        reply = msg.content
        if reply.get("status") != "ok":
            raise RegistrationFailed(
                f"the controller at {url} refused registration: {reply.get('evalue', reply)}")
        if not isinstance(reply.get("id"), int):
            raise RegistrationFailed(
                f"the controller at {url} sent a registration_reply without an integer id: {reply}")
        return reply
