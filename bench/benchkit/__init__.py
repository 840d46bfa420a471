"""hpclaunch's benchmark kit: peer-agnostic workloads, the peers' adapters, process accounting.

Imported by ``bench/run_peer.py`` in whichever interpreter runs the peer (the project's venv
for hpclaunch, the peers venv for the others), so it depends on numpy and psutil only.
"""
