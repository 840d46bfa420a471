"""The engine: registers with the controller, then runs apply/execute/push/pull
requests in one persistent namespace, streaming output, until shut down.

Light by design (stdlib, zmq and cloudpickle only; no IPython). Start one with
``python -m hpclaunch.engine --profile NAME`` or :func:`hpclaunch.engine.app.main`.
"""
