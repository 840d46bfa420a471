"""The controller: the hub (registration, heartbeat, queries, task records) and the
schedulers that route requests to engines, behind one ROUTER socket."""
