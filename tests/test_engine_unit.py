"""Engine logic that needs no controller: namespace, kernel, output capture, wire helpers, CLI."""

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import zmq

from hpclaunch.engine import app, ledger as ledger_module
from hpclaunch.engine.capture import TRUNCATION_NOTE, TaskStream, captured_output
from hpclaunch.engine.kernel import Kernel, error_content
from hpclaunch.engine.wire import reply_metadata, reply_type, unsigned_rejection
from hpclaunch.error import SerializationError
from hpclaunch.protocol import (
    DELIM,
    Session,
    deserialize,
    json_frame,
    new_key,
    pack_apply,
    serialize,
    write_connection_file,
)
from hpclaunch.protocol.ratelimit import RateLimitedLog


def client_main(source):
    """Define functions as a client's interactive ``__main__`` would (cloudpickle ships them by value)."""
    namespace = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace


def apply(kernel, f, *args, **kwargs):
    return deserialize(kernel.apply(pack_apply(f, args, kwargs)))


@pytest.fixture
def kernel():
    return Kernel(install_main=False)


# -- namespace and function rebinding ------------------------------------------------
def test_pushed_names_are_visible_to_applied_functions(kernel):
    client = client_main("get_a = lambda: a\n")
    kernel.push(serialize({"a": 5}))
    assert apply(kernel, client["get_a"]) == 5


def test_global_statement_writes_the_namespace(kernel):
    client = client_main("""
        def set_x(v):
            global x
            x = v
    """)
    apply(kernel, client["set_x"], 1)
    assert deserialize(kernel.pull(["x"])) == (1,)


def test_captured_helpers_join_the_namespace_without_overwriting(kernel):
    client = client_main("""
        import math
        scale = 100
        def helper(v):
            return v * scale
        def f():
            return helper(math.floor(2.5))
    """)
    kernel.push(serialize({"scale": 3}))
    assert apply(kernel, client["f"]) == 6  # the engine's scale wins over the captured one
    assert kernel.namespace["math"].floor(1.5) == 1
    assert "helper" in kernel.namespace
    # the helper was rebound too: it follows later pushes
    kernel.push(serialize({"scale": 10}))
    assert apply(kernel, client_main("g = lambda: helper(2)")["g"]) == 20


def test_client_functions_in_arguments_are_rebound(kernel):
    client = client_main("""
        def offset(v):
            return v + base
        def mapper(fn, xs):
            return [fn(x) for x in xs]
    """)
    kernel.push(serialize({"base": 100}))
    assert apply(kernel, client["mapper"], client["offset"], [1, 2]) == [101, 102]


def test_pushed_client_functions_see_the_namespace(kernel):
    client = client_main("def show():\n    return value\n")
    kernel.push(serialize({"show": client["show"], "value": "here"}))
    kernel.execute("result = show()")
    assert kernel.namespace["result"] == "here"


def test_library_functions_are_not_rebound(kernel):
    assert apply(kernel, os.path.join, "a", "b") == os.path.join("a", "b")


def test_clear_resets_the_same_namespace_dict(kernel):
    ns = kernel.namespace
    kernel.push(serialize({"a": 1}))
    kernel.clear()
    assert kernel.namespace is ns
    assert "a" not in ns and ns["__name__"] == "__main__"
    with pytest.raises(NameError, match="'a'"):
        kernel.pull(["a"])


# -- kernel requests -------------------------------------------------------------------
def test_execute_echoes_the_last_expression_unless_silent(kernel):
    with captured_output(lambda name, text: None) as out:
        kernel.execute("y = 6 * 7\ny")
        kernel.execute("y + 1", silent=True)
    assert out["stdout"] == "42\n"
    assert kernel.namespace["y"] == 42


def test_execute_error_traceback_shows_user_code_not_the_engine(kernel):
    with pytest.raises(ZeroDivisionError) as info:
        kernel.execute("z = 1\n1 / 0\n")
    content = error_content(info.value, engine_id=3)
    assert content["status"] == "error" and content["ename"] == "ZeroDivisionError"
    assert content["engine_info"] == {"engine_id": 3}
    assert "1 / 0" in content["traceback"]
    assert "hpclaunch" not in content["traceback"]


def test_syntax_error_is_reported_without_engine_frames(kernel):
    with pytest.raises(SyntaxError) as info:
        kernel.execute("def (:\n")
    text = error_content(info.value, 0)["traceback"]
    assert "SyntaxError" in text and "hpclaunch" not in text


def test_pull_returns_a_tuple_and_names_the_missing_name(kernel):
    kernel.push(serialize({"a": 1, "b": [2]}))
    assert deserialize(kernel.pull(["a", "b"])) == (1, [2])
    with pytest.raises(NameError, match="'nope'"):
        kernel.pull(["a", "nope"])


def test_push_needs_a_dict_of_identifiers(kernel):
    with pytest.raises(TypeError, match="dict"):
        kernel.push(serialize([1, 2]))
    with pytest.raises(ValueError, match="identifiers"):
        kernel.push(serialize({"not a name": 1}))


def test_unserializable_result_is_a_serialization_error(kernel):
    client = client_main("import threading\nmake_lock = lambda: threading.Lock()\n")
    with pytest.raises(SerializationError, match="result of <lambda>"):
        kernel.apply(pack_apply(client["make_lock"]))


def test_apply_without_buffers_is_a_clear_error(kernel):
    with pytest.raises(SerializationError, match="no buffers"):
        kernel.apply([])


# -- output capture --------------------------------------------------------------------
def collector():
    sent = []
    return sent, lambda name, text: sent.append((name, text))


def test_stream_publishes_complete_lines_and_flushes_the_rest():
    sent, publish = collector()
    stream = TaskStream("stdout", publish, io.StringIO())
    stream.write("a\nb")
    assert sent == [("stdout", "a\n")]
    stream.write("c")
    assert sent == [("stdout", "a\n")]
    assert stream.close_task() == "a\nbc"
    assert sent == [("stdout", "a\n"), ("stdout", "bc")]


def test_stream_publishes_long_text_without_newline():
    sent, publish = collector()
    stream = TaskStream("stderr", publish, io.StringIO(), chunk=10)
    stream.write("x" * 11)
    assert sent == [("stderr", "x" * 11)]


def test_stream_caps_what_the_reply_keeps_but_streams_everything():
    sent, publish = collector()
    stream = TaskStream("stdout", publish, io.StringIO(), limit=5)
    stream.write("0123456789\n")
    assert stream.close_task() == "01234" + TRUNCATION_NOTE
    assert "".join(text for _, text in sent) == "0123456789\n"


def test_a_silent_task_publishes_nothing_and_a_stream_starts_empty():
    sent, publish = collector()
    first = TaskStream("stdout", publish, io.StringIO())
    assert first.close_task() == "" and sent == []
    first.flush()  # after the task: nothing pending, nothing sent
    second = TaskStream("stdout", publish, io.StringIO())
    second.write("own\n")  # nothing of the first stream's state is shared
    assert second.close_task() == "own\n" and first.captured() == ""
    nothing_kept = TaskStream("stdout", publish, io.StringIO(), limit=0)
    nothing_kept.write("x")
    assert nothing_kept.close_task() == TRUNCATION_NOTE


def test_writes_after_the_task_go_to_the_real_stream():
    real = io.StringIO()
    sent, publish = collector()
    stream = TaskStream("stdout", publish, real)
    stream.close_task()
    stream.write("late\n")
    assert real.getvalue() == "late\n" and sent == []


def test_captured_output_restores_streams_and_collects_thread_output():
    before = sys.stdout, sys.stderr
    sent, publish = collector()
    with captured_output(publish) as out:
        print("main")
        worker = threading.Thread(target=lambda: [print("thread", i) for i in range(100)])
        worker.start()
        worker.join()
        print("oops", file=sys.stderr)
    assert (sys.stdout, sys.stderr) == before
    assert out["stdout"].count("thread") == 100 and out["stdout"].startswith("main\n")
    assert out["stderr"] == "oops\n"
    assert "".join(t for n, t in sent if n == "stdout") == out["stdout"]


def test_captured_output_restores_streams_when_the_task_raises():
    before = sys.stdout, sys.stderr
    sent, publish = collector()
    with pytest.raises(ValueError), captured_output(publish) as out:
        print("partial", end="")
        int("not a number")
    assert (sys.stdout, sys.stderr) == before
    assert out == {"stdout": "partial", "stderr": ""} and sent == [("stdout", "partial")]


# -- wire helpers and logging ----------------------------------------------------------
def test_reply_type_and_metadata():
    assert reply_type("apply_request") == "apply_reply"
    meta = reply_metadata(4, "ok", 1.0, 2.0, "out", "err")
    assert meta == {"engine_id": 4, "started": 1.0, "completed": 2.0, "status": "ok",
                    "stdout": "out", "stderr": "err"}


def test_unsigned_signature_error_is_recognised():
    header = {"msg_id": "m", "msg_type": "signature_error", "session": "s"}
    frames = [DELIM, b"", json_frame(header), b"{}", b"{}",
              json_frame({"ename": "SignatureError", "evalue": "wrong key"})]
    assert unsigned_rejection(frames) == "wrong key"
    assert unsigned_rejection([DELIM, b"abc"] + frames[2:]) is None  # signed: not a rejection
    assert unsigned_rejection([b"junk"]) is None
    assert unsigned_rejection([DELIM, b"", b"not json", b"{}", b"{}", b"{}"]) is None


def test_rate_limited_log_reports_a_reason_once_per_interval():
    now = [0.0]
    lines = []

    class Log:
        def warning(self, fmt, *args):
            lines.append(fmt % args)

    limited = RateLimitedLog(Log(), interval=10, clock=lambda: now[0])
    assert limited.warning("bad message", "one")
    assert not limited.warning("bad message", "two")
    assert limited.warning("other reason")
    now[0] = 11
    assert limited.warning("bad message", "three")
    assert lines[-1] == "bad message: three (1 more like this since last report)"


# -- command line -----------------------------------------------------------------------
def test_connection_file_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCLAUNCH_DIR", str(tmp_path))
    parse = app.build_parser().parse_args
    assert app.connection_file_path(parse(["--file", "x.json", "--profile", "p"])) == "x.json"
    assert app.connection_file_path(parse(["--profile", "p"])) == str(
        tmp_path / "profile_p" / "security" / "engine.json")
    assert app.connection_file_path(parse(["--profile-dir", str(tmp_path / "d")])) == str(
        tmp_path / "d" / "security" / "engine.json")


def test_missing_connection_file_exits_1_with_a_clear_error(tmp_path, capsys):
    assert app.main(["--file", str(tmp_path / "none.json")]) == 1


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--timeout", "-1"])


def test_engine_gives_up_when_no_controller_answers(tmp_path):
    """A real engine process against a loopback port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "security" / "engine.json"
    write_connection_file(str(path), {"url": f"tcp://127.0.0.1:{port}", "key": new_key(),
                                      "signature_scheme": "hmac-sha256"})
    proc = subprocess.run([sys.executable, "-m", "hpclaunch.engine", "--profile-dir", str(tmp_path),
                           "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"no controller answered at tcp://127.0.0.1:{port} within 1 s" in proc.stderr
    assert json.loads(path.read_text())["key"] not in proc.stderr


def test_a_registration_interrupted_by_a_signal_still_takes_the_reply():
    """A stop signal may come just as the engine sends registration_request: the controller
    registers it all the same. register() then waits STOP_GRACE for the reply (the engine
    unregisters with it) instead of leaving a ghost engine for the heartbeat to find."""
    from hpclaunch.engine.registration import STOP_GRACE, register

    key = new_key()
    ctx = zmq.Context.instance()
    controller, engine = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (controller, engine):
        sock.setsockopt(zmq.LINGER, 0)
    port = controller.bind_to_random_port("tcp://127.0.0.1")
    engine.connect(f"tcp://127.0.0.1:{port}")
    session = Session(key)

    def answer(delay):
        request = session.unpack(controller.recv_multipart())
        time.sleep(delay)
        session.send(controller, "registration_reply", {"status": "ok", "id": 7},
                     parent=request.header, ident=request.idents)

    try:
        url = f"tcp://127.0.0.1:{port}"
        replier = threading.Thread(target=answer, args=(0.5,))
        replier.start()
        reply = register(session, engine, url, {"uuid": "u"}, 30, should_stop=lambda: True)
        replier.join()
        assert reply == {"status": "ok", "id": 7}

        replier = threading.Thread(target=answer, args=(STOP_GRACE + 1,))
        replier.start()
        started = time.monotonic()
        assert register(session, engine, url, {"uuid": "u"}, 30, should_stop=lambda: True) is None
        assert time.monotonic() - started < STOP_GRACE + 0.9
        replier.join()
    finally:
        engine.close()
        controller.close()


# -- the ledger (the books of the direct lane) -------------------------------------------

@pytest.fixture
def ledger_pair():
    """``(session, controller, ledger)``: a Ledger (not started) talking to a ROUTER."""
    session = Session(new_key())
    ctx = zmq.Context.instance()
    controller = ctx.socket(zmq.ROUTER)
    controller.setsockopt(zmq.LINGER, 0)
    port = controller.bind_to_random_port("tcp://127.0.0.1")
    ledger = ledger_module.Ledger(ctx, f"tcp://127.0.0.1:{port}", "books-unit", session)
    yield session, controller, ledger
    ledger.close()
    controller.close()


def test_the_ledger_sends_big_books_in_pieces_with_the_answers_last(monkeypatch, ledger_pair):
    """Rows are shaped off the task's path: a request answered in the same books is one
    task row; what a flush holds goes as several books messages of about FLUSH_BYTES, and
    the controller's tokens only with the last."""
    monkeypatch.setattr(ledger_module, "FLUSH_BYTES", 3000)
    session, controller, ledger = ledger_pair
    ledger.engine_id = 3  # not started: this thread sends, as the ledger thread would
    requests = []
    for i in range(4):
        _, frames = session.pack("apply_request", {}, buffers=[bytes([i]) * 1000])
        request = session.unpack(frames)
        requests.append(request)
        ledger.request(request)
        if i == 1:
            continue  # answered after the next one is read
        metadata = reply_metadata(3, "ok", stdout=f"out {i}")
        _, reply = session.pack("apply_reply", {"status": "ok"}, request, metadata,
                                [b"r" * 10])
        ledger.reply(request, metadata, reply[1:])
        if i == 2:
            metadata = reply_metadata(3, "ok", stdout="out 1")
            _, reply = session.pack("apply_reply", {"status": "ok"}, requests[1],
                                    metadata, [b"r" * 10])
            ledger.reply(requests[1], metadata, reply[1:])
    ledger._send(["token-1"])
    books = []
    while controller.poll(500):
        books.append(session.unpack(controller.recv_multipart()))
    assert [b.content["answers"] for b in books] == [[]] * (len(books) - 1) + [["token-1"]]
    rows = [(kind, row) for b in books for kind in ("requests", "tasks", "replies")
            for row in b.content[kind]]
    ids = [r.msg_id for r in requests]
    booked = sorted((row[0], kind) for kind, row in rows)
    # (a request's frames are ~1.3 KB, a reply's ~0.6 KB.) Request 1 closes the first
    # books before its reply comes, and request 3 the second: each is a request row,
    # then a reply row; tasks 0 and 2 are one row each
    assert booked == sorted([(ids[0], "tasks"), (ids[1], "requests"), (ids[1], "replies"),
                             (ids[2], "tasks"), (ids[3], "requests"), (ids[3], "replies")])
    assert len(books) == 3
    task = next(row for kind, row in rows if kind == "tasks" and row[0] == ids[0])
    assert task[1] == "apply_request" and task[5] == "ok" and task[8] == "out 0"
    for b in books:
        sizes = [n for kind in ("requests", "tasks", "replies") for row in b.content[kind]
                 for field in row if isinstance(field, list) for n in field]
        assert sum(sizes) == len(b.buffers[0]) < 3000 + 2000
    # the buffer holds the request rows' frames first, then the task rows'
    blob, first = books[0].buffers[0], books[0].content["requests"][0][4]
    assert blob[:sum(first)].endswith(bytes([1]) * 1000)
    assert blob[sum(first):].find(bytes([0]) * 1000) > 0


def test_the_ledger_answers_after_the_reply_being_sent_is_noted(ledger_pair):
    """A client may have its reply and ask queue_status before the engine's main thread has
    noted that reply; the answer to books_request waits for ``replying`` (held from a
    reply's send to its note), so the books it answers with hold that reply."""
    session, controller, ledger = ledger_pair
    ledger.start(3)
    hello = session.unpack(controller.recv_multipart())  # a ledger says hello first
    _, frames = session.pack("apply_request", {})
    request = session.unpack(frames)
    ledger.request(request)
    with ledger.replying:  # the main thread has sent the reply, not noted it yet
        session.send(controller, "books_request", {"token": "t"}, ident=hello.idents)
        time.sleep(0.3)
        metadata = reply_metadata(3, "ok")
        _, reply = session.pack("apply_reply", {"status": "ok"}, request, metadata)
        ledger.reply(request, metadata, reply[1:])
    rows, answered = [], False
    while not answered and controller.poll(2000):
        books = session.unpack(controller.recv_multipart())
        rows += books.content["tasks"] + books.content["requests"] + books.content["replies"]
        answered = books.content["answers"] == ["t"]
    assert answered
    # the reply is a task row (with its request) or a reply row (if the request went before)
    assert [row[0] for row in rows if len(row) in (7, 11)] == [request.msg_id], \
        "the books the answer closes hold the reply"
