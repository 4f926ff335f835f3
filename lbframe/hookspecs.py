"""The hooks lbframe calls on plugins.

Registration hooks hand a plugin a registry to add factories to (tox's
``tox_register_tox_env(register)`` is the model). Event hooks tell plugins
what happened. Hooks are for wiring and events: the data path calls the
objects the factories made, never a hook per packet.

None of these hooks is ``firstresult`` or historic: every implementation is
called, in pluggy's order (last registered first), and a plugin registered
after an event does not see it. A registration hook is called once per
plugin implementing it, in load order, each with that plugin's registry
(:class:`lbframe.plugins.Registrar`; why: :mod:`lbframe.plugins`). Their reference, with examples, is
``docs/plugins/hooks.md``; a test fails when a hook here is missing there.
"""

from lbframe import hookspec


@hookspec
def lbframe_register_schedulers(registry):
    """Add scheduler factories: ``registry.add(name, factory)``.

    Called once per plugin implementing it, at load time (``twistd
    lbframe``, ``lbframe check``, ``lbframe plugins``), before any config is
    looked at; ``registry.plugin`` names the plugin.

    ``factory(pool, options)`` is called once per ``[pool X]`` naming the
    scheduler, with the frozen :class:`lbframe.config.Pool` and a dict of the
    section's keys that lbframe does not define (strings); it returns an
    :class:`lbframe.interfaces.IScheduler` and raises
    :class:`lbframe.errors.OptionError` for a bad or unknown key.
    """


@hookspec
def lbframe_register_monitors(registry):
    """Add monitor factories: ``registry.add(name, factory)``.

    ``factory(monitor, options, reactor)`` is called once per ``[monitor X]``
    whose ``type`` is the name, with the frozen
    :class:`lbframe.config.Monitor`, the section's own keys and the reactor
    (for connections and time); it returns an
    :class:`lbframe.interfaces.IMonitor` (:class:`lbframe.monitoring.BaseMonitor`
    is a base class for it).
    """


@hookspec
def lbframe_register_protocols(registry):
    """Add protocol factories: ``registry.add(name, factory)``.

    ``factory(virtual, options, site)`` is called once per ``[virtual X]``
    whose ``protocol`` is the name, with the frozen
    :class:`lbframe.config.Virtual`, its own keys and the whole
    :class:`lbframe.config.Site`; it validates the section and returns an
    :class:`lbframe.interfaces.IProtocol`.
    """


@hookspec
def lbframe_register_persistence_methods(registry):
    """Add persistence method factories: ``registry.add(name, factory)``.

    ``factory(profile, options)`` is called once per ``[persistence X]``
    whose ``method`` is the name, with the frozen
    :class:`lbframe.config.Persistence` and its own keys; it returns an
    :class:`lbframe.interfaces.IPersistenceMethod`. The section's own keys
    are shared with the store: a factory that names the keys it reads in an
    ``option_keys`` attribute lets lbframe refuse the others for it.
    """


@hookspec
def lbframe_register_persistence_stores(registry):
    """Add persistence store factories by URL scheme: ``registry.add("redis", factory)``.

    ``factory(url, profile, reactor)`` is called once per ``[persistence X]``
    whose ``store`` is the name or a URL with that scheme
    (``redis://127.0.0.1:6379/0``); it returns an
    :class:`lbframe.interfaces.IPersistenceStore`.
    """


@hookspec
def lbframe_register_redundancy_drivers(registry):
    """Add redundancy driver factories: ``registry.add(name, factory)``.

    ``factory(redundancy, options, reactor)`` is called once, for the
    ``[redundancy]`` section (``driver = none`` when there is none), with
    the frozen :class:`lbframe.config.Redundancy`; it returns an
    :class:`lbframe.interfaces.IRedundancyDriver`.
    """


@hookspec
def lbframe_member_state_changed(pool, member, old, new, reason):
    """A member's state changed (``up``, ``down``, ``draining``, ``disabled``).

    Called by the pool (the one owner of member state) right after the
    change, whatever made it: a monitor's rise or fall, the admin API, a
    reload. ``pool`` and ``member`` are names; ``old`` and ``new`` states;
    ``reason`` says why, e.g. ``"connect refused (3/3)"`` or ``"by admin"``.
    Runs in the reactor thread: return quickly, do no blocking I/O.
    """


@hookspec
def lbframe_redundancy_state_changed(old, new):
    """This node's redundancy state changed, e.g. ``backup`` → ``master``
    (states are :attr:`lbframe.interfaces.IRedundancyDriver.state` values).

    Called by a redundancy driver after the change; the built-in ``none``
    driver never changes state, so it is not called with ``driver = none``.
    """


@hookspec
def lbframe_site_started(site):
    """The site (a frozen :class:`lbframe.config.Site`) started serving.

    Called once, when the service tree has started (listeners bound,
    monitors scheduled): the place to start something beside the site, as
    ``examples/quickstart/demo_backends.py`` starts demo backends.
    """


@hookspec
def lbframe_site_reloaded(old, new):
    """A reload (SIGHUP) replaced site ``old`` with ``new`` (both frozen
    :class:`lbframe.config.Site`).

    Called on the new site's plugins, after the new configuration is in
    force; not called when the new configuration was refused.
    """
