"""Reply contents the hub makes itself (errors, names of reply types)."""


def reply_type(msg_type):
    """``apply_request`` -> ``apply_reply``; anything else -> ``error_reply``."""
    return msg_type[: -len("_request")] + "_reply" if msg_type.endswith("_request") else "error_reply"


def error(ename, evalue, **engine_info):
    content = {"status": "error", "ename": ename, "evalue": evalue, "traceback": ""}
    if engine_info:
        content["engine_info"] = engine_info
    return content
