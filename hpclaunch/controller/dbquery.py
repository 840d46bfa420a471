"""The task DB's small query language (ipyparallel's Mongo-style subset).

``{"engine_id": 3, "completed": {"$gt": t0}, "status": {"$in": ["error", "aborted"]}}``
matches records whose every named field satisfies its condition.
"""

import operator

FIELDS = ("msg_id", "msg_type", "session", "engine_id", "submitted", "started", "completed",
          "status", "stdout", "stderr")


def _cmp(op):
    def test(value, operand):
        return value is not None and operand is not None and op(value, operand)
    return test


OPERATORS = {
    "$lt": _cmp(operator.lt),
    "$lte": _cmp(operator.le),
    "$gt": _cmp(operator.gt),
    "$gte": _cmp(operator.ge),
    "$ne": operator.ne,
    "$eq": operator.eq,
    "$in": lambda value, operand: value in operand,
    "$nin": lambda value, operand: value not in operand,
}


def compile_query(query):
    """Validate a query; returns a predicate over record summaries. Raises ValueError."""
    if not isinstance(query, dict):
        raise ValueError(f"a query is a dict of field -> condition, not {type(query).__name__}")
    tests = []
    for field, cond in query.items():
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r} in query; fields are {', '.join(FIELDS)}")
        conds = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, operand in conds.items():
            if op not in OPERATORS:
                raise ValueError(f"unknown operator {op!r} for {field!r}; operators are "
                                 f"{', '.join(OPERATORS)}")
            if op in ("$in", "$nin") and not isinstance(operand, list):
                raise ValueError(f"{op} for {field!r} needs a list, got {type(operand).__name__}")
            tests.append((field, OPERATORS[op], operand))

    def matches(summary):
        return all(test(summary.get(field), operand) for field, test, operand in tests)

    return matches


def project(summary, keys):
    """Only the requested fields (msg_id always)."""
    if not keys:
        return summary
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}; keys are {', '.join(FIELDS)}")
    return {k: summary.get(k) for k in ("msg_id", *keys)}
