"""Client: the connection to a running controller and the books of what was sent.

Three DEALERs go to the controller's one port: ``send`` (user threads, under a lock),
``recv`` (the I/O thread's) and the SyncChannel (a blocking call sends there and reads its
own replies, one thread at a time). Everything else arrives on ``recv`` and is recorded by
the Inbox, so ``ids``, ``results`` and futures stay current without spin().

Work for one engine (apply, execute, push, pull) goes on the direct lane when the engine
can be reached (protocol/direct.py): straight to the engine, with a copy to the controller
for its books. Each of ``send`` and the SyncChannel has a DirectLane beside it for that.
"""

import concurrent.futures
import contextlib
import socket
import threading
import time

import zmq

from .. import error
from ..protocol import DELIM, Session, has_message, paths, read_connection_file, send_frames
from ..protocol.direct import kept_for_books
from .asyncresult import AsyncResult
from .direct import DirectLane
from .inbox import HubRequest, Inbox, new_metadata
from .iothread import IOThread, dealer
from .loadbalanced import LoadBalancedView
from .records import TaskRecords
from .syncchannel import SyncChannel
from .view import DirectView

#: A future that is already done: what a SyncChannel waits for when sending failed.
_ALREADY_DONE = concurrent.futures.Future()
_ALREADY_DONE.set_result(None)
#: Requests that may go on the direct lane (the others need the controller).
DIRECT_TYPES = frozenset({"apply_request", "execute_request", "push_request", "pull_request"})


class Client(TaskRecords):
    """Connect to the controller of a profile (or of a connection file).

    ``timeout``: seconds to wait for the controller to answer, at connect time and for
    each hub query (queue_status, purge_results, hub_history, shutdown).

    ``sshserver='user@host[:port]'`` (default: the connection file's ``ssh`` field) opens
    one SSH tunnel to the controller's port and connects through it; ``sshkey`` is a
    private key file (default: the file's ``sshkey``, then ssh's own choice);
    ``paramiko`` None uses OpenSSH if ``ssh`` is on PATH, else paramiko; True/False forces.

    ``direct`` (default: on unless tunnelled) sends work for one engine straight to it,
    one network hop instead of two; engines this process cannot reach are used through
    the controller either way. ``direct=False`` sends everything through the controller.

    ``results`` keeps every result by msg_id, except that one of 1 MiB or more stays only
    while the program holds it or its AsyncResult (client/results.py: a loop pulling big
    arrays does not grow); ``keep_results=True`` keeps those too, as ipyparallel does.
    """

    def __init__(self, url_file=None, profile=None, profile_dir=None, timeout=10,
                 sshserver=None, sshkey=None, paramiko=None, direct=None, keep_results=False):
        path = url_file or paths.client_file(paths.profile_dir(profile, profile_dir))
        info = read_connection_file(path)
        self.controller_url = info["url"]
        self._tunnel = self._tunnel_error = None
        self._closed = True  # until the sockets exist, close() only ends the tunnel
        sshserver = sshserver or info.get("ssh")
        if sshserver:
            self._open_tunnel(sshserver, sshkey or info.get("sshkey"), paramiko, timeout)
        self.url = self._tunnel.url if self._tunnel else self.controller_url
        self.connection_file = path
        self.timeout = timeout
        self.session = Session(info["key"])
        self.history = []
        self.block = False
        self._inbox = Inbox(self.session, connection_file=path, client=self,
                            keep_results=keep_results)
        self._send_lock = threading.Lock()
        self._closed = False
        self._context = zmq.Context()
        curve = info.get("curve")
        self._result_poll = None
        direct = self._tunnel is None if direct is None else bool(direct)
        self._lane = None
        try:
            self._send_socket = dealer(self._context, self.url, curve)
            engines = lambda: self._inbox.engines  # replaced, never mutated: read it anew
            if direct:
                self._lane = DirectLane(self._context, curve, engines, self.session)
            self._sync = SyncChannel(self._context, self.url, curve, self._inbox.on_frames,
                                     self._inbox.pending, engines, self.session, direct)
            self._send_sockets = [self._send_socket] + ([self._lane.socket] if direct else [])
            self._io = IOThread(self._context, self.url, on_start=self._send_connect,
                                on_frames=self._inbox.on_frames, on_tick=self._poll_hub,
                                wants_tick=lambda: bool(self._inbox.hub_watch),
                                send_sockets=self._send_sockets, send_lock=self._send_lock,
                                curve=curve, sync_channel=self._sync,
                                streams={self._lane.socket: self._lane.streams} if direct else {})
            self._sync.wake_io = self._io.wake
        except BaseException:  # e.g. malformed Curve keys: leave no ssh process behind
            self._closed = True
            self.close()
            self._context.destroy(linger=0)
            raise
        self._connect = HubRequest("connect_request", on_ok=self._on_connect_reply)
        self._inbox.connect_request = self._connect
        self._io.start()
        try:
            self._connect.result(timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            raise error.TimeoutError(
                f"no controller answered at {self.controller_url}{self._via()} within "
                f"{timeout} s: is the cluster running (hpclaunch status)? is this the right "
                f"connection file ({path})?" + self._reachability_hint()
                + (" The controller encrypts with CurveZMQ: keys from another cluster's "
                   "connection file cannot connect." if curve else "")
            ) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._inbox.connect_request = None

    # -- connection -----------------------------------------------------------------
    def _send_connect(self, recv_socket):
        """Runs on the I/O thread: its socket says hello, so replies are routed to it."""
        with self._send_lock:
            header = self.session.header("connect_request")
            self._connect.msg_id = header["msg_id"]
            self._inbox.pending[header["msg_id"]] = self._connect
            self.session.send(recv_socket, "connect_request", {}, header=header)

    def _on_connect_reply(self, msg):
        self._inbox.set_engines(msg.content.get("engines") or {})

    def _open_tunnel(self, sshserver, sshkey, paramiko, timeout):
        """One SSH tunnel to the controller's one port; both sockets connect through it."""
        from ..tunnel import open_tunnel  # paramiko is imported only if that backend is used

        self._tunnel = open_tunnel(self.controller_url, sshserver, sshkey=sshkey,
                                   paramiko=paramiko, timeout=max(float(timeout), 20.0))
        self._tunnel.on_drop(self._on_tunnel_drop)

    def _reachability_hint(self):
        """Why a direct connection failed, when the OS can say (e.g. no route to a host
        behind a login node): one quick TCP connect to the controller's port."""
        if self._tunnel is not None:
            return ""
        from ..tunnel import split_tcp_url

        try:
            host, port = split_tcp_url(self.controller_url)
            socket.create_connection((host, port), timeout=2).close()
        except error.TunnelError:
            return ""
        except OSError as e:
            return (f" A TCP connection to {self.controller_url} fails ({e.strerror or e}): "
                    f"if the controller is behind a login node, pass sshserver='user@login'.")
        return ""

    def _via(self):
        tunnel = self._tunnel
        return f" (through SSH {tunnel.server}, {tunnel.backend} backend)" if tunnel else ""

    def _on_tunnel_drop(self, exc):
        """Watcher thread: nothing can arrive any more, so every waiter gets the reason now
        instead of hanging; the hub keeps the results for a new Client."""
        self._tunnel_error = exc
        if not self._closed:
            self._inbox.fail_all(exc)

    def close(self):
        """Stop the I/O thread, close the sockets (linger 0), fail what is still pending
        and end the SSH tunnel, if any (its ssh process or thread does not outlive us)."""
        if self._closed:
            if self._tunnel is not None:
                self._tunnel.close()
            return
        self._closed = True
        stopped = self._io.stop()
        with self._send_lock:
            for sock in self._send_sockets:
                sock.close(linger=0)
        self._inbox.fail_all(error.HpclaunchError(
            "the Client was closed before this request got a reply"))
        self._sync.close()
        if stopped:
            self._context.term()
        if self._tunnel is not None:
            self._tunnel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self.ids)} engines"
        return f"<hpclaunch.Client {self.controller_url}{self._via()}: {state}>"

    # -- the books ------------------------------------------------------------------
    @property
    def ids(self):
        """Sorted ids of the registered engines, kept current by notifications."""
        return list(self._inbox.ids)

    @property
    def results(self):
        return self._inbox.results

    @property
    def metadata(self):
        return self._inbox.metadata

    @property
    def outstanding(self):
        return self._inbox.outstanding

    @property
    def engines(self):
        """``{id: {uuid, hostname, pid}}`` of the registered engines."""
        return dict(self._inbox.engines)

    def wait_for_engines(self, n, timeout=None):
        """Block until at least ``n`` engines are registered (timeout None/negative: forever)."""
        if timeout is not None and timeout < 0:
            timeout = None
        cond = self._inbox.ids_changed
        with cond:
            if cond.wait_for(lambda: len(self._inbox.ids) >= n, timeout):
                return
            have = len(self._inbox.ids)
        raise error.TimeoutError(
            f"only {have} of {n} engines registered within {timeout} s: are the engines "
            f"starting (hpclaunch status, the engine logs)?")

    # -- views ----------------------------------------------------------------------
    def _build_targets(self, targets):
        """Engine ids for ``targets``: 'all'/None, an id (negative: from the end), a slice
        of the id list, or a list of ids. Raises if an id is not registered."""
        ids = self._inbox.ids
        if targets is None or (isinstance(targets, str) and targets == "all"):
            if not ids:
                raise error.NoEnginesRegistered(
                    "no engines are registered: start some (hpclaunch start) or wait for "
                    "them with rc.wait_for_engines(n)")
            return list(ids)
        if isinstance(targets, slice):
            return ids[targets]
        if isinstance(targets, int):
            targets = [targets]
        try:
            targets = [int(t) for t in targets]
        except (TypeError, ValueError):
            raise TypeError(f"targets must be 'all', an int, a slice or a list of ints, "
                            f"not {targets!r}") from None
        known = set(ids)
        out = []
        for t in targets:
            if t < 0 and ids and -len(ids) <= t:
                t = ids[t]
            if t not in known:
                raise IndexError(f"no such engine: {t} (registered: {ids})")
            out.append(t)
        return out

    def direct_view(self, targets="all"):
        """A DirectView; 'all' follows the engines registered at each call."""
        if targets is None or (isinstance(targets, str) and targets == "all"):
            return DirectView(self, "all")
        single = isinstance(targets, int)
        ids = self._build_targets(targets)
        return DirectView(self, ids[0] if single else ids)

    def load_balanced_view(self, targets=None):
        """A LoadBalancedView: the controller's scheduler picks an engine for each task,
        among ``targets`` (None: any engine)."""
        return LoadBalancedView(self, targets)

    def __getitem__(self, key):
        if isinstance(key, (int, slice, list, tuple, range)):
            return self.direct_view(key if isinstance(key, (int, slice)) else list(key))
        raise TypeError(f"index a Client with an engine id, a slice or a list, not {key!r}")

    # -- sending --------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise error.HpclaunchError("this Client is closed; create a new one")
        if self._tunnel_error is not None:
            raise error.TunnelError(str(self._tunnel_error))

    def _submit(self, msg_type, content, jobs, fname, ar_class=AsyncResult, balanced=None,
                wait=False, **ar_kwargs):
        """Send one request per ``(engine_id, buffers)`` job; returns their AsyncResult.

        Registration precedes sending so a reply can never outrun its future. The same
        buffers list may be given for every engine: it is pickled once, signed per message.
        A job whose engine_id is None goes to the load-balanced scheduler with the
        ``balanced`` metadata (targets/after/follow/timeout/retries) instead of an engine.
        ``wait=True`` (a blocking call) returns once every reply is in, read by this
        thread on the SyncChannel when it is free (see syncchannel.py).
        """
        self._check_open()
        sync = self._sync if wait and self._sync.try_borrow() else None
        sent = []
        try:
            ar = self._send_requests(msg_type, content, jobs, fname, ar_class, balanced,
                                     sync, sent, ar_kwargs)
        except BaseException:
            if sync is not None:  # replies to what did go out are the I/O thread's to read
                sync.wait(_ALREADY_DONE, sent)
            raise
        if sync is not None:
            sync.wait(ar, ar.msg_ids)
        return ar

    def _send_requests(self, msg_type, content, jobs, fname, ar_class, balanced, sync, sent,
                       ar_kwargs):
        session, inbox = self.session, self._inbox
        pending, metadata, outstanding = inbox.pending, inbox.metadata, inbox.outstanding
        sock, lane = (self._send_socket, self._lane) if sync is None else (sync.socket, sync.lane)
        if msg_type not in DIRECT_TYPES:
            lane = None
        with self._send_lock if sync is None else contextlib.nullcontext():
            headers = [session.header(msg_type) for _ in jobs]
            msg_ids = [h["msg_id"] for h in headers]
            ar = ar_class(inbox, msg_ids, fname=fname, targets=[e for e, _ in jobs], **ar_kwargs)
            copies = []  # of direct-lane requests, for the controller's books
            for header, (engine_id, buffers) in zip(headers, jobs):
                msg_id = header["msg_id"]
                metadata[msg_id] = new_metadata(msg_id, engine_id, header["date"])
                pending[msg_id] = ar
                outstanding.add(msg_id)
                md = balanced if engine_id is None else {"engine": engine_id}
                if sync is not None:
                    md = {**(md or {}), "answer_here": True}
                if lane is not None and engine_id is not None and lane.usable(engine_id):
                    _, frames = session.pack(msg_type, content, metadata={**md, "direct": True},
                                             buffers=buffers, header=header, sign=False)
                    if lane.send(engine_id, frames):
                        metadata[msg_id]["direct"] = True
                        if sync is None:  # it may wait unread behind running work: book it now
                            copies.append([DELIM, *kept_for_books(frames[1:])])
                        else:  # booked by the engine's ledger, or if it waits (syncchannel.py)
                            sync.sent_direct(msg_id, frames)
                        sent.append(msg_id)
                        continue
                session.send(sock, msg_type, content, metadata=md, buffers=buffers,
                             header=header)
                sent.append(msg_id)
            for frames in copies:
                send_frames(sock, frames)
            self.history.extend(msg_ids)
            if sync is None:
                self._check_send_socket()
        return ar

    def _check_send_socket(self):
        """Under the send lock, after sending: a send can swallow the edge that tells the
        I/O thread an answer came back on these sockets, so look and wake it if one did."""
        if any(has_message(sock) for sock in self._send_sockets):
            self._io.wake()

    def _hub_request(self, msg_type, content, on_ok=None):
        """Send a query to the controller itself; returns a HubRequest future."""
        self._check_open()
        request = HubRequest(msg_type, on_ok=on_ok)
        with self._send_lock:
            header = self.session.header(msg_type)
            request.msg_id = header["msg_id"]
            self._inbox.pending[header["msg_id"]] = request
            self.session.send(self._send_socket, msg_type, content, header=header)
            self._check_send_socket()
        return request

    def _hub_query(self, msg_type, content):
        return self._wait_hub(self._hub_request(msg_type, content))

    def _wait_hub(self, request):
        """The reply of a hub query, waiting at most ``timeout`` seconds."""
        try:
            return request.result(self.timeout)
        except concurrent.futures.TimeoutError:
            if request.done():
                raise
            self._inbox.pending.pop(request.msg_id, None)
            raise error.TimeoutError(
                f"the controller at {self.url} did not answer {request.msg_type} within "
                f"{self.timeout} s: is it still running (hpclaunch status)?") from None

    # -- hub queries ----------------------------------------------------------------
    def queue_status(self, targets=None, verbose=False):
        """``{engine_id: {'queue', 'completed', 'tasks'}, 'unassigned': n}`` (counts, or
        msg_id lists when verbose); one engine's dict if ``targets`` is an int."""
        ids = None if targets is None else self._build_targets(targets)
        reply = self._hub_query("queue_request", {"targets": ids, "verbose": bool(verbose)})
        content = reply.content
        status = {int(k): v for k, v in (content.get("queues") or {}).items()}
        if isinstance(targets, int):
            return status[ids[0]]
        status["unassigned"] = content.get("unassigned", 0)
        return status

    def _msg_ids(self, jobs, allow_int=False):
        """msg_ids from a msg_id, an AsyncResult, or a list of them (ints index history)."""
        if isinstance(jobs, (str, AsyncResult)) or (allow_int and isinstance(jobs, int)):
            jobs = [jobs]
        out = []
        for job in jobs:
            if isinstance(job, AsyncResult):
                out.extend(job.msg_ids)
            elif isinstance(job, str):
                out.append(job)
            elif allow_int and isinstance(job, int):
                out.append(self.history[job])
            else:
                raise TypeError(f"expected a msg_id or an AsyncResult, not {job!r}")
        return out

    # -- waiting --------------------------------------------------------------------
    def wait(self, jobs=None, timeout=-1):
        """Wait for ``jobs`` (default: everything outstanding); False if ``timeout`` passed."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        msg_ids = list(self._inbox.outstanding) if jobs is None else self._msg_ids(jobs)
        for msg_id in msg_ids:
            ar = self._inbox.pending.get(msg_id)
            if ar is None or type(ar) is HubRequest:
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ar._wait_index(ar._index[msg_id], left)
            except error.TimeoutError:
                return False
        return True

    # -- engine control ---------------------------------------------------------------
    def _control(self, msg_type, content, targets, block, fname):
        ids = self._build_targets(targets)
        ar = self._submit(msg_type, content, [(e, ()) for e in ids], fname,
                          single=isinstance(targets, int))
        if block:
            ar.get()
        return ar

    def abort(self, jobs=None, targets=None, block=None):
        """Abort queued tasks (``jobs``: msg_ids/AsyncResults; None: all queued) on targets."""
        msg_ids = None if jobs is None else self._msg_ids(jobs)
        return self._control("abort_request", {"msg_ids": msg_ids}, targets,
                             self.block if block is None else block, "abort")

    def clear(self, targets=None, block=None):
        """Empty the namespaces of the target engines."""
        return self._control("clear_request", {}, targets,
                             self.block if block is None else block, "clear")

    def shutdown(self, targets="all", hub=False, block=True):
        """Stop engines; ``hub=True`` stops every engine and then the controller."""
        if hub:
            request = self._hub_request("shutdown_request", {"engines": True})
            if block:
                self._wait_hub(request)
            return request
        return self._control("shutdown_request", {}, targets, block, "shutdown")
