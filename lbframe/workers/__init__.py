"""``workers = N``: one control-plane process, N data-path processes.

Modelled on nginx's master/worker and HAProxy's master-worker modes:

* the **parent** (the process ``twistd lbframe`` started) reads the site,
  binds every listening socket (before ``--uid``, so ports below 1024 and
  dropping root work as with one process), runs the monitors, the
  redundancy driver, the admin API and the persistence tables of
  ``store = memory`` profiles, and accepts no client itself;
* each **worker** (``python -m lbframe.workers.child``) builds the same site
  from the same file, with no monitor, driver or admin of its own, adopts
  the parent's listening sockets (:mod:`lbframe.workers.inherited`) and
  serves the tcp, http and ssl virtual servers on them;
* one ``AF_UNIX`` socketpair per worker (:mod:`lbframe.workers.channel`)
  carries the sockets, member state, reloads and persistence lookups down,
  and counters and log lines up (:mod:`lbframe.workers.state`).

A reload is :func:`lbframe.site.apply` in every process: the parent
applies it, then tells each worker, which reads the same file and applies
it itself. A worker that dies is started again (its connections are lost,
the others' are not). ``workers = 1`` (the default) is the single process
of before: nothing here runs.
"""

from __future__ import annotations

#: protocols whose virtual servers the workers serve; the others (routed,
#: nat, udp, a plugin's) stay in the parent
WORKER_PROTOCOLS = ("tcp", "http", "ssl")
#: endpoint kinds a worker can adopt from the parent
WORKER_ENDPOINTS = ("tcp", "tcp6", "ssl")


def served_by_workers(spec) -> bool:
    """Whether the workers (not the parent) serve virtual server ``spec``."""
    return (spec.protocol in WORKER_PROTOCOLS
            and all(d.split(":", 1)[0].strip().lower() in WORKER_ENDPOINTS
                    for d in spec.listen))
